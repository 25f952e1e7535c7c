//! The file service's errors and their gRPC codes (through the one table in confab-common).

use confab_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Bad input the caller can fix: wrong type, oversize, corrupt, hostile.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Exhausted(String),
    #[error("storage failed")]
    Storage(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl FileError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    pub fn storage(e: impl Into<anyhow::Error>) -> Self {
        Self::Storage(e.into())
    }
}

impl ServiceError for FileError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Exhausted(_) => ErrorCode::ResourceExhausted,
            Self::Storage(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Storage(_) => "file storage is unavailable; try again shortly".into(),
            Self::Internal(_) => "internal error; the details are in the server log".into(),
            other => other.to_string(),
        }
    }
}

confab_common::impl_status_from!(FileError);

pub type Result<T, E = FileError> = std::result::Result<T, E>;

pub use confab_extract::human_size;

impl From<confab_extract::ExtractError> for FileError {
    fn from(e: confab_extract::ExtractError) -> Self {
        match e {
            confab_extract::ExtractError::Invalid(msg) => Self::Invalid(msg),
            confab_extract::ExtractError::Internal(e) => {
                Self::Internal(anyhow::Error::from_boxed(e))
            }
        }
    }
}
