//! The conversation service's errors; each says its gRPC code through [`ServiceError`].

use confab_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// Bad input; the message says what is wrong and what is allowed.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown id, or another user's (never revealed as existing).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database could not be reached.
    #[error("conversation store unavailable; try again")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else from the store: a bug or corrupted data.
    #[error("conversation store failed")]
    Storage(#[source] anyhow::Error),
}

pub type Result<T, E = ConversationError> = std::result::Result<T, E>;

impl ConversationError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
    pub fn storage(e: impl Into<anyhow::Error>) -> Self {
        Self::Storage(e.into())
    }
}

impl ServiceError for ConversationError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Storage(_) => ErrorCode::Internal,
        }
    }
}

confab_common::impl_status_from!(ConversationError);

impl From<rusqlite::Error> for ConversationError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Self::Unavailable(e.into())
            }
            _ => Self::Storage(e.into()),
        }
    }
}

impl From<mongodb::error::Error> for ConversationError {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *e.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => Self::Unavailable(e.into()),
            _ => Self::Storage(e.into()),
        }
    }
}
