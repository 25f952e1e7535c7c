//! Readable errors from gRPC statuses and failed generations.

/// An error as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiError {
    pub text: String,
    /// Offer a retry button.
    pub retryable: bool,
    pub retry_after_seconds: Option<u32>,
}

/// gRPC status codes used below (numbering from the gRPC spec).
pub mod code {
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Finds a wait in seconds in a server message: "retry after 12s", "try again in 3 s",
/// "retry_after=7", "in 30 seconds".
pub fn parse_retry_after(message: &str) -> Option<u32> {
    let lower = message.to_ascii_lowercase();
    for key in [
        "retry after",
        "retry-after",
        "retry_after",
        "try again in",
        "again in",
        "wait",
    ] {
        if let Some(i) = lower.find(key) {
            let rest = lower[i + key.len()..].trim_start_matches([' ', ':', '=']);
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

pub fn rate_limited_text(retry_after: Option<u32>) -> String {
    match retry_after {
        Some(n) if n > 0 => format!("You're sending messages too fast — try again in {n} s."),
        _ => "You're sending messages too fast — try again in a moment.".to_string(),
    }
}

/// Turns a gRPC status (code, message, optional `retry-after` metadata) into UI text.
pub fn describe_status(code: i32, message: &str, retry_after_header: Option<u32>) -> UiError {
    let msg = message.trim();
    let retry_after = retry_after_header.or_else(|| parse_retry_after(msg));
    let (text, retryable) = match code {
        code::RESOURCE_EXHAUSTED => {
            let lower = msg.to_ascii_lowercase();
            if lower.contains("token") && (lower.contains("budget") || lower.contains("daily")) {
                (format!("You've used today's token budget. {msg}"), false)
            } else if lower.contains("too large") || lower.contains("limit is") {
                (msg.to_string(), false)
            } else {
                (rate_limited_text(retry_after), true)
            }
        }
        code::INVALID_ARGUMENT | code::FAILED_PRECONDITION if !msg.is_empty() => {
            (msg.to_string(), false)
        }
        code::NOT_FOUND => ("Not found — it may have been deleted.".to_string(), false),
        code::PERMISSION_DENIED => ("You don't have access to that.".to_string(), false),
        code::UNAUTHENTICATED => ("Your session expired — reconnecting…".to_string(), true),
        code::UNAVAILABLE => (
            "Can't reach the server — check your connection and retry.".to_string(),
            true,
        ),
        code::DEADLINE_EXCEEDED => (
            "The server took too long to answer — retry.".to_string(),
            true,
        ),
        code::CANCELLED => ("Cancelled.".to_string(), true),
        code::UNIMPLEMENTED => ("This server doesn't support that yet.".to_string(), false),
        _ if !msg.is_empty() => (format!("Something went wrong: {msg}"), true),
        _ => ("Something went wrong — retry.".to_string(), true),
    };
    UiError {
        text,
        retryable,
        retry_after_seconds: retry_after,
    }
}

/// A failed generation (the `Failed` event or a stored failed message).
pub fn describe_failure(message: &str, rate_limited: bool, retry_after_seconds: u32) -> String {
    let after = (retry_after_seconds > 0).then_some(retry_after_seconds);
    if rate_limited {
        return rate_limited_text(after.or_else(|| parse_retry_after(message)));
    }
    let m = message.trim();
    if m.is_empty() {
        "The model failed to answer.".to_string()
    } else {
        format!("The model failed to answer: {m}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_says_when_to_retry() {
        let e = describe_status(
            code::RESOURCE_EXHAUSTED,
            "rate limited: retry after 12s",
            None,
        );
        assert_eq!(
            e.text,
            "You're sending messages too fast — try again in 12 s."
        );
        assert_eq!(e.retry_after_seconds, Some(12));
        assert!(e.retryable);
        let e = describe_status(code::RESOURCE_EXHAUSTED, "slow down", Some(3));
        assert_eq!(
            e.text,
            "You're sending messages too fast — try again in 3 s."
        );
        let e = describe_status(code::RESOURCE_EXHAUSTED, "", None);
        assert_eq!(
            e.text,
            "You're sending messages too fast — try again in a moment."
        );
    }

    #[test]
    fn budget_and_size_limits_are_not_rate_limits() {
        let e = describe_status(
            code::RESOURCE_EXHAUSTED,
            "daily token budget exhausted",
            None,
        );
        assert!(
            e.text.starts_with("You've used today's token budget"),
            "{}",
            e.text
        );
        assert!(!e.retryable);
        let e = describe_status(
            code::RESOURCE_EXHAUSTED,
            "file is 14 MB; the limit is 10 MB",
            None,
        );
        assert_eq!(e.text, "file is 14 MB; the limit is 10 MB");
    }

    #[test]
    fn other_codes_have_readable_text() {
        assert_eq!(
            describe_status(code::INVALID_ARGUMENT, "content is empty", None).text,
            "content is empty"
        );
        assert!(describe_status(code::UNAVAILABLE, "", None).retryable);
        assert!(
            describe_status(code::NOT_FOUND, "x", None)
                .text
                .starts_with("Not found")
        );
        assert_eq!(
            describe_status(code::INTERNAL, "", None).text,
            "Something went wrong — retry."
        );
    }

    #[test]
    fn parse_retry_after_variants() {
        assert_eq!(parse_retry_after("Retry-After: 30"), Some(30));
        assert_eq!(parse_retry_after("please try again in 5 seconds"), Some(5));
        assert_eq!(parse_retry_after("retry_after=7"), Some(7));
        assert_eq!(parse_retry_after("no number here"), None);
    }

    #[test]
    fn failures() {
        assert_eq!(
            describe_failure("x", true, 9),
            "You're sending messages too fast — try again in 9 s."
        );
        assert_eq!(
            describe_failure("upstream 502", false, 0),
            "The model failed to answer: upstream 502"
        );
        assert_eq!(
            describe_failure(" ", false, 0),
            "The model failed to answer."
        );
    }
}
