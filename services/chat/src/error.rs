//! The chat service's errors and their row in the common error table.

use std::time::Duration;

use confab_common::{ErrorCode, ServiceError};
use tonic::Code;

use crate::context::TooLarge;
use crate::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_seconds: u32,
    },
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    #[error("{service} service: {}", status.message())]
    Downstream {
        service: &'static str,
        status: tonic::Status,
    },
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl ChatError {
    pub fn downstream(service: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Downstream { service, status }
    }
}

impl ServiceError for ChatError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) | Self::TooLarge(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::RateLimited { .. } => ErrorCode::ResourceExhausted,
            Self::Downstream { status, .. } => match status.code() {
                Code::InvalidArgument => ErrorCode::InvalidArgument,
                Code::NotFound => ErrorCode::NotFound,
                Code::AlreadyExists => ErrorCode::AlreadyExists,
                Code::Unauthenticated => ErrorCode::Unauthenticated,
                Code::PermissionDenied => ErrorCode::PermissionDenied,
                Code::ResourceExhausted => ErrorCode::ResourceExhausted,
                Code::FailedPrecondition => ErrorCode::FailedPrecondition,
                Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
                Code::Cancelled => ErrorCode::Cancelled,
                Code::Unavailable | Code::Unimplemented => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            },
            Self::Provider(e) => match e {
                ProviderError::RateLimited { .. } => ErrorCode::ResourceExhausted,
                ProviderError::Timeout(_) => ErrorCode::DeadlineExceeded,
                ProviderError::ContextTooLarge(_) => ErrorCode::InvalidArgument,
                ProviderError::Internal(_) => ErrorCode::Internal,
                ProviderError::Unavailable(_) | ProviderError::Upstream(_) => {
                    ErrorCode::Unavailable
                }
            },
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Downstream { status, service } if self.code() != ErrorCode::Internal => {
                if matches!(status.code(), Code::Unavailable | Code::Unimplemented) {
                    format!("the {service} service is unavailable; try again shortly")
                } else {
                    status.message().to_owned()
                }
            }
            _ if self.code() == ErrorCode::Internal => {
                "internal error; the details are in the server log".to_owned()
            }
            other => other.to_string(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited {
                retry_after_seconds,
                ..
            } => Some(Duration::from_secs(u64::from(*retry_after_seconds))),
            Self::Provider(e) => e
                .retry_after_seconds()
                .map(|s| Duration::from_secs(s.into())),
            Self::Downstream { status, .. } => {
                confab_common::error::retry_after_secs(status).map(Duration::from_secs)
            }
            _ => None,
        }
    }
}

impl From<ChatError> for tonic::Status {
    fn from(e: ChatError) -> Self {
        confab_common::error::to_status(&e)
    }
}
