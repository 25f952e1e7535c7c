//! Small human-readable formatting helpers.

/// "512 B", "1.5 KB", "14.0 MB".
pub fn human_bytes(n: u64) -> String {
    const KB: f64 = 1024.0;
    let f = n as f64;
    if f < KB {
        format!("{n} B")
    } else if f < KB * KB {
        format!("{:.1} KB", f / KB)
    } else if f < KB * KB * KB {
        format!("{:.1} MB", f / (KB * KB))
    } else {
        format!("{:.1} GB", f / (KB * KB * KB))
    }
}

/// "950", "12.3k", "1.2M".
pub fn compact(n: u64) -> String {
    if n < 1000 {
        n.to_string()
    } else if n < 1_000_000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        format!("{:.1}M", n as f64 / 1_000_000.0)
    }
}

/// Seconds until `at_ms`, rounded up, never negative.
pub fn seconds_until(at_ms: i64, now_ms: i64) -> u64 {
    let d = at_ms.saturating_sub(now_ms);
    if d <= 0 { 0 } else { (d as u64).div_ceil(1000) }
}

/// "just now", "5 min ago", "3 h ago", "2 d ago".
pub fn relative_time(at_ms: i64, now_ms: i64) -> String {
    let s = (now_ms.saturating_sub(at_ms) / 1000).max(0);
    match s {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KB");
        assert_eq!(human_bytes(14 * 1024 * 1024), "14.0 MB");
        assert_eq!(compact(950), "950");
        assert_eq!(compact(12_345), "12.3k");
        assert_eq!(compact(1_200_000), "1.2M");
        assert_eq!(seconds_until(10_500, 10_000), 1);
        assert_eq!(seconds_until(9_000, 10_000), 0);
        assert_eq!(relative_time(0, 30_000), "just now");
        assert_eq!(relative_time(0, 5 * 60_000), "5 min ago");
        assert_eq!(relative_time(0, 3 * 3_600_000), "3 h ago");
        assert_eq!(relative_time(0, 2 * 86_400_000), "2 d ago");
    }
}
