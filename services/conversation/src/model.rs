//! Limits, id and page-token validation: the rules both stores rely on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{ConversationError, Result};

/// Titles: at most this many characters (Unicode scalar values).
pub const MAX_TITLE_CHARS: usize = 200;
/// Message content: at most 256 KiB of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;
/// System prompts: at most 32 KiB of UTF-8.
pub const MAX_SYSTEM_PROMPT_BYTES: usize = 32 * 1024;
/// Model ids, generation ids, error messages: short strings.
pub const MAX_MODEL_CHARS: usize = 128;
pub const MAX_GENERATION_ID_CHARS: usize = 128;
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;
pub const MAX_ATTACHMENTS: usize = 32;
pub const MAX_FILENAME_CHARS: usize = 512;
/// Search queries: at most this many characters and distinct words.
pub const MAX_QUERY_CHARS: usize = 500;
pub const MAX_QUERY_TERMS: usize = 16;

pub const DEFAULT_CONVERSATION_PAGE: u32 = 20;
pub const MAX_CONVERSATION_PAGE: u32 = 100;
pub const DEFAULT_MESSAGE_PAGE: u32 = 50;
pub const MAX_MESSAGE_PAGE: u32 = 200;
pub const DEFAULT_SEARCH_PAGE: u32 = 20;
pub const MAX_SEARCH_PAGE: u32 = 50;

/// New ids: UUID v7 (time-ordered), hyphenated lowercase.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Ids must be hyphenated lowercase UUIDs; anything else is INVALID_ARGUMENT.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = id.len() == 36
        && uuid::Uuid::try_parse(id).is_ok()
        && id
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else if id.is_empty() {
        Err(ConversationError::invalid(format!("{what} is required")))
    } else {
        Err(ConversationError::invalid(format!(
            "{what} is not a valid id (expected a UUID such as 0190c4d2-7b1e-7c3a-9f00-1a2b3c4d5e6f)"
        )))
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn check_title(title: &str) -> Result<()> {
    let n = title.chars().count();
    if n > MAX_TITLE_CHARS {
        return Err(ConversationError::invalid(format!(
            "title is {n} characters; the limit is {MAX_TITLE_CHARS}"
        )));
    }
    Ok(())
}

pub fn check_chars(what: &str, value: &str, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n > max {
        return Err(ConversationError::invalid(format!(
            "{what} is {n} characters; the limit is {max}"
        )));
    }
    Ok(())
}

pub fn check_bytes(what: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(ConversationError::invalid(format!(
            "{what} is {} bytes; the limit is {} KiB",
            value.len(),
            max / 1024
        )));
    }
    Ok(())
}

/// 0 → default; otherwise 1..=max.
pub fn page_size(what: &str, requested: u32, default: u32, max: u32) -> Result<u32> {
    match requested {
        0 => Ok(default),
        n if n <= max => Ok(n),
        n => Err(ConversationError::invalid(format!(
            "{what} page_size {n} is too large; allowed 1..={max} (0 means {default})"
        ))),
    }
}

/// Position after the last conversation of a page: (pinned, updated_at, id), in the
/// order "pinned first (if asked), newest activity first, id descending".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationCursor {
    pub pinned_first: bool,
    pub pinned: bool,
    pub updated_at_ms: i64,
    pub id: String,
}

/// Position after the last message of a page: its sequence number in the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageCursor {
    pub conversation_id: String,
    pub newest_first: bool,
    pub include_superseded: bool,
    pub seq: i64,
}

fn bad_token() -> ConversationError {
    ConversationError::invalid(
        "page_token is invalid; pass next_page_token from the previous response unchanged",
    )
}

fn decode_token(token: &str, kind: &str) -> Result<Vec<String>> {
    if token.len() > 256 {
        return Err(bad_token());
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad_token())?;
    let text = String::from_utf8(raw).map_err(|_| bad_token())?;
    let parts: Vec<String> = text.split('|').map(str::to_owned).collect();
    if parts.first().map(String::as_str) != Some(kind) {
        return Err(bad_token());
    }
    Ok(parts)
}

fn flag(s: &str) -> Result<bool> {
    match s {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(bad_token()),
    }
}

impl ConversationCursor {
    pub fn encode(&self) -> String {
        let text = format!(
            "c1|{}|{}|{}|{}",
            u8::from(self.pinned_first),
            u8::from(self.pinned),
            self.updated_at_ms,
            self.id
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Decodes a token and checks it belongs to a listing with the same ordering.
    pub fn decode(token: &str, pinned_first: bool) -> Result<Self> {
        let p = decode_token(token, "c1")?;
        if p.len() != 5 {
            return Err(bad_token());
        }
        let c = Self {
            pinned_first: flag(&p[1])?,
            pinned: flag(&p[2])?,
            updated_at_ms: p[3].parse().map_err(|_| bad_token())?,
            id: p[4].clone(),
        };
        check_id("page_token", &c.id).map_err(|_| bad_token())?;
        if c.pinned_first != pinned_first {
            return Err(ConversationError::invalid(
                "page_token was issued for a different pinned_first setting",
            ));
        }
        Ok(c)
    }
}

impl MessageCursor {
    pub fn encode(&self) -> String {
        let text = format!(
            "m1|{}|{}|{}|{}",
            self.conversation_id,
            u8::from(self.newest_first),
            u8::from(self.include_superseded),
            self.seq
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(
        token: &str,
        conversation_id: &str,
        newest_first: bool,
        include_superseded: bool,
    ) -> Result<Self> {
        let p = decode_token(token, "m1")?;
        if p.len() != 5 {
            return Err(bad_token());
        }
        let c = Self {
            conversation_id: p[1].clone(),
            newest_first: flag(&p[2])?,
            include_superseded: flag(&p[3])?,
            seq: p[4].parse().map_err(|_| bad_token())?,
        };
        if c.conversation_id != conversation_id
            || c.newest_first != newest_first
            || c.include_superseded != include_superseded
            || c.seq < 0
        {
            return Err(ConversationError::invalid(
                "page_token was issued for a different conversation or listing order",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict() {
        let id = new_id();
        assert!(check_id("id", &id).is_ok());
        assert!(check_id("id", &id.to_uppercase()).is_err());
        assert!(check_id("id", "").is_err());
        assert!(check_id("id", "../etc/passwd").is_err());
        assert!(check_id("id", &id.replace('-', "")).is_err());
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let c = ConversationCursor {
            pinned_first: true,
            pinned: false,
            updated_at_ms: 42,
            id: new_id(),
        };
        assert_eq!(ConversationCursor::decode(&c.encode(), true).unwrap(), c);
        assert!(ConversationCursor::decode(&c.encode(), false).is_err());
        for bad in ["", "x", "!!!", &URL_SAFE_NO_PAD.encode("c1|1|0|x|y")] {
            assert!(ConversationCursor::decode(bad, true).is_err(), "{bad}");
        }
        let m = MessageCursor {
            conversation_id: new_id(),
            newest_first: false,
            include_superseded: false,
            seq: 7,
        };
        assert_eq!(
            MessageCursor::decode(&m.encode(), &m.conversation_id, false, false).unwrap(),
            m
        );
        assert!(MessageCursor::decode(&m.encode(), &new_id(), false, false).is_err());
        assert!(MessageCursor::decode(&c.encode(), &m.conversation_id, false, false).is_err());
    }
}
