//! Plain text formats: one part, the text as it is (JSON pretty-printed when compact).

use crate::types::{ExtractedPart, PartKind};

use crate::error::Result;
use crate::extract::{Limits, part};

pub fn extract(
    data: &[u8],
    json: bool,
    limits: &Limits,
) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    limits.check_time()?;
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let text = String::from_utf8_lossy(data);
    let mut text = text.replace("\r\n", "\n");
    // One long line of JSON reads badly; pretty-print small documents.
    if json
        && text.len() < 1024 * 1024
        && !text.trim().contains('\n')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Ok(pretty) = serde_json::to_string_pretty(&v)
    {
        text = pretty;
    }
    Ok((vec![part(PartKind::Text, "Text", text)], Vec::new()))
}
