//! Extraction errors: the caller's file is unusable (`Invalid`, a message for the user) or
//! something went wrong on our side (`Internal`).

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Bad input the caller can fix: wrong type, oversize, corrupt, hostile.
    #[error("{0}")]
    Invalid(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ExtractError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

pub type Result<T, E = ExtractError> = std::result::Result<T, E>;

/// Human size: "14.2 MB", "900 KB", "12 bytes".
pub fn human_size(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes >= 1024 * 1024 {
        let v = bytes as f64 / MB;
        if v >= 100.0 || v.fract() < 0.05 {
            format!("{:.0} MB", v)
        } else {
            format!("{v:.1} MB")
        }
    } else if bytes >= 1024 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}
