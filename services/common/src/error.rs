//! The one error table: every service error says its [`ErrorCode`]; [`to_status`] is the
//! single place that turns it into a `tonic::Status`, logging the cause chain on the
//! server and sending the caller a short human message.

use std::error::Error as StdError;
use std::time::Duration;

use tonic::{Code, Status};

/// Metadata key carrying seconds until a retry can succeed (with RESOURCE_EXHAUSTED).
pub const RETRY_AFTER_KEY: &str = "retry-after";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad input: wrong type, oversize, corrupt, invalid id or page token.
    InvalidArgument,
    /// Unknown id, or another user's id (never reveal that it exists).
    NotFound,
    AlreadyExists,
    /// No or invalid identity.
    Unauthenticated,
    /// Authenticated but not allowed (e.g. internal RPC from outside).
    PermissionDenied,
    /// Quota or size limit; carries a retry time when one applies.
    ResourceExhausted,
    /// Valid request in the wrong state (e.g. regenerate with no answer yet).
    FailedPrecondition,
    /// A dependency (database, Redis, model) is unreachable; retrying may help.
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    Unimplemented,
    /// A bug or an unexpected failure; details stay in the server log.
    Internal,
}

impl ErrorCode {
    pub fn grpc(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Unavailable => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Cancelled => Code::Cancelled,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
        }
    }

    /// Server-side faults are logged as errors; caller mistakes as debug.
    fn is_server_fault(self) -> bool {
        matches!(
            self,
            Self::Internal | Self::Unavailable | Self::DeadlineExceeded
        )
    }
}

/// Implemented by each service's error enum.
pub trait ServiceError: StdError + Send + Sync + 'static {
    fn code(&self) -> ErrorCode;

    /// What the caller reads. Defaults to the `Display` text, except for internal
    /// errors, whose details stay in the log.
    fn public_message(&self) -> String {
        if self.code() == ErrorCode::Internal {
            "internal error; the details are in the server log".to_owned()
        } else {
            self.to_string()
        }
    }

    /// For RESOURCE_EXHAUSTED: when a retry can succeed.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// The cause chain, `outer: inner: root`.
pub fn cause_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The single conversion from a domain error to a gRPC status.
pub fn to_status<E: ServiceError>(err: &E) -> Status {
    let code = err.code();
    if code.is_server_fault() {
        tracing::error!(error = %cause_chain(err), code = ?code.grpc(), "request failed");
    } else {
        tracing::debug!(error = %cause_chain(err), code = ?code.grpc(), "request refused");
    }
    let mut status = Status::new(code.grpc(), err.public_message());
    if let Some(after) = err.retry_after() {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(v) = secs.to_string().parse() {
            status.metadata_mut().insert(RETRY_AFTER_KEY, v);
        }
    }
    status
}

/// Seconds from a status's `retry-after` metadata, if any.
pub fn retry_after_secs(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `impl From<$ty> for tonic::Status` through [`to_status`].
#[macro_export]
macro_rules! impl_status_from {
    ($ty:ty) => {
        impl From<$ty> for ::tonic::Status {
            fn from(e: $ty) -> Self {
                $crate::error::to_status(&e)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum DemoError {
        #[error("file is 14 MB; the limit is 10 MB")]
        TooBig,
        #[error("database write failed")]
        Db(#[source] std::io::Error),
        #[error("rate limited; try again in 3 s")]
        Limited,
    }

    impl ServiceError for DemoError {
        fn code(&self) -> ErrorCode {
            match self {
                Self::TooBig => ErrorCode::InvalidArgument,
                Self::Db(_) => ErrorCode::Internal,
                Self::Limited => ErrorCode::ResourceExhausted,
            }
        }
        fn retry_after(&self) -> Option<Duration> {
            matches!(self, Self::Limited).then(|| Duration::from_millis(2500))
        }
    }

    #[test]
    fn client_errors_keep_their_message() {
        let s = to_status(&DemoError::TooBig);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "file is 14 MB; the limit is 10 MB");
    }

    #[test]
    fn internal_errors_hide_details() {
        let s = to_status(&DemoError::Db(std::io::Error::other("disk on fire")));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("disk"));
        assert_eq!(
            cause_chain(&DemoError::Db(std::io::Error::other("disk on fire"))),
            "database write failed: disk on fire"
        );
    }

    #[test]
    fn retry_after_rounds_up_into_metadata() {
        let s = to_status(&DemoError::Limited);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(retry_after_secs(&s), Some(3));
    }
}
