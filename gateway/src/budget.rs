//! Per-caller request budgets, decided by the rate-limit service so they hold across
//! gateway replicas: every public RPC is admitted as a cheap read or a costlier write
//! before it is forwarded, and every anonymous session minted counts against the
//! client's address (IPv6 per /64).

use std::time::Duration;

use confab_common::{ErrorCode, GrpcChannel, ServiceError};
use confab_proto::ratelimit::v1 as pb;
use confab_proto::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient;
use tonic::Status;

/// Read or write, from the method name: reads only look (and are the cheap class).
pub fn class_of(method: &str) -> pb::RequestClass {
    const READS: &[&str] = &["Get", "List", "Search", "Export", "Download", "Attach"];
    if READS.iter().any(|p| method.starts_with(p)) {
        pb::RequestClass::Read
    } else {
        pb::RequestClass::Write
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The budget is spent; the message carries its numbers.
    #[error("{message}")]
    Exhausted {
        message: String,
        retry_after: Duration,
    },
    /// The rate-limit service refused to decide (closed policy with Redis down, or
    /// unreachable): the call is not forwarded unchecked.
    #[error("request budgets cannot be checked right now; try again shortly")]
    Unavailable(#[source] Status),
}

impl ServiceError for BudgetError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Exhausted { .. } => ErrorCode::ResourceExhausted,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Exhausted { retry_after, .. } => Some(*retry_after),
            Self::Unavailable(_) => None,
        }
    }
}

confab_common::impl_status_from!(BudgetError);

/// The gateway's client of `RateLimitService.Admit`.
#[derive(Clone)]
pub struct Budgets {
    client: RateLimitServiceClient<GrpcChannel>,
    fail_closed: bool,
}

impl Budgets {
    /// `fail_closed`: `RATE_LIMIT_FAIL_POLICY=closed`, also applied when the rate-limit
    /// service itself cannot be reached (open: the call goes through, logged).
    pub fn new(ratelimit: GrpcChannel, fail_closed: bool) -> Self {
        Self {
            client: RateLimitServiceClient::new(ratelimit),
            fail_closed,
        }
    }

    /// Admits one request of `class` for `subject` (`user:<id>` or `ip:<addr>`).
    pub async fn admit(&self, subject: &str, class: pb::RequestClass) -> Result<(), BudgetError> {
        let request = pb::AdmitRequest {
            subject: Some(pb::Subject {
                key: subject.to_owned(),
            }),
            class: class as i32,
        };
        let r = match self.client.clone().admit(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && !self.fail_closed => {
                tracing::warn!(error = %s, "rate-limit service unreachable; admitting (fail-open)");
                return Ok(());
            }
            Err(s) => return Err(BudgetError::Unavailable(s)),
        };
        if r.allowed {
            return Ok(());
        }
        Err(BudgetError::Exhausted {
            message: r.message,
            retry_after: Duration::from_millis(u64::from(r.retry_after_ms.max(1))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_the_looking_methods() {
        for m in [
            "GetQuota",
            "ListMessages",
            "SearchConversations",
            "DownloadFile",
            "Attach",
        ] {
            assert_eq!(class_of(m), pb::RequestClass::Read, "{m}");
        }
        for m in [
            "SendMessage",
            "UploadChunk",
            "DeleteConversation",
            "StopGeneration",
        ] {
            assert_eq!(class_of(m), pb::RequestClass::Write, "{m}");
        }
    }

    #[test]
    fn exhausted_is_resource_exhausted_with_retry_after() {
        let s = Status::from(BudgetError::Exhausted {
            message: "too many write requests: at most 2 per minute; try again in 30 s".into(),
            retry_after: Duration::from_millis(29_001),
        });
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(confab_common::error::retry_after_secs(&s), Some(30));
        assert!(s.message().contains("at most 2 per minute"));
    }
}
