//! Full-text search: the FTS5 index kept beside the rows, and the ranked query.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::get_conversation;
use crate::search::{MARK_CLOSE, MARK_OPEN};
use crate::store::StoredHit;
use confab_proto::conversation::v1::Message;

/// Matching rows a search reads at most to find one hit per conversation.
const MAX_SEARCH_ROWS: i64 = 20_000;

/// A stable 64-bit FNV-1a token of the owner, so FTS can filter by owner as a term.
pub(super) fn owner_key(owner: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in owner.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("u{h:016x}")
}

/// `fresh`: a new row, never indexed (no old entry to delete).
pub(super) fn index_title(
    conn: &Connection,
    owner: &str,
    rid: i64,
    id: &str,
    title: &str,
    fresh: bool,
) -> rusqlite::Result<()> {
    if !fresh {
        conn.prepare_cached("DELETE FROM search_fts WHERE rowid = ?1")?
            .execute([-rid])?;
    }
    if !title.is_empty() {
        conn.prepare_cached(
            "INSERT INTO search_fts (rowid, owner_key, title, body, conversation_id, message_id) \
             VALUES (?1, ?2, ?3, '', ?4, '')",
        )?
        .execute(params![-rid, owner_key(owner), title, id])?;
    }
    Ok(())
}

pub(super) fn index_message(
    conn: &Connection,
    owner: &str,
    rid: i64,
    m: &Message,
    fresh: bool,
) -> rusqlite::Result<()> {
    if !fresh {
        conn.prepare_cached("DELETE FROM search_fts WHERE rowid = ?1")?
            .execute([rid])?;
    }
    if !m.content.is_empty() && !m.superseded {
        conn.prepare_cached(
            "INSERT INTO search_fts (rowid, owner_key, title, body, conversation_id, message_id) \
             VALUES (?1, ?2, '', ?3, ?4, ?5)",
        )?
        .execute(params![
            rid,
            owner_key(owner),
            m.content,
            m.conversation_id,
            m.id
        ])?;
    }
    Ok(())
}

/// Conversations whose title or messages hold every term, best first, one hit each.
pub(super) fn search(
    conn: &Connection,
    owner: &str,
    terms: &[String],
    limit: u32,
) -> rusqlite::Result<Vec<StoredHit>> {
    let words: Vec<String> = terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    let expr = format!(
        "owner_key : \"{}\" AND {{title body}} : ({})",
        owner_key(owner),
        words.join(" AND ")
    );
    let open = MARK_OPEN.to_string();
    let close = MARK_CLOSE.to_string();
    // One hit per conversation: walk the best rows until `limit` conversations,
    // reading further when the best rows crowd into few conversations.
    let mut stmt = conn.prepare_cached(
        "SELECT rowid, conversation_id, message_id, bm25(search_fts, 0.0, 4.0, 1.0) AS r \
             FROM search_fts WHERE search_fts MATCH ?1 ORDER BY r LIMIT ?2",
    )?;
    let mut fetch = i64::from(limit) * 8 + 32;
    let mut best: Vec<(i64, String, String, f64)> = Vec::new();
    loop {
        best.clear();
        let mut seen = std::collections::HashSet::new();
        let mut rows = stmt.query(params![expr, fetch])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            n += 1;
            let cid: String = r.get(1)?;
            if best.len() < limit as usize && seen.insert(cid.clone()) {
                best.push((r.get(0)?, cid, r.get(2)?, -r.get::<_, f64>(3)?));
            }
        }
        if best.len() >= limit as usize || n < fetch || fetch >= MAX_SEARCH_ROWS {
            break;
        }
        fetch = (fetch * 4).min(MAX_SEARCH_ROWS);
    }
    let mut snip = conn.prepare_cached(
        "SELECT snippet(search_fts, CASE WHEN message_id = '' THEN 1 ELSE 2 END, ?3, ?4, '…', 24) \
             FROM search_fts WHERE search_fts MATCH ?1 AND rowid = ?2",
    )?;
    let best: Vec<(String, String, String, f64)> = best
        .into_iter()
        .map(|(rowid, cid, mid, score)| {
            let snippet: String = snip
                .query_row(params![expr, rowid, open, close], |r| r.get(0))
                .optional()?
                .unwrap_or_default();
            Ok((cid, mid, snippet, score))
        })
        .collect::<rusqlite::Result<_>>()?;
    let mut hits = Vec::with_capacity(best.len());
    for (cid, mid, snippet, score) in best {
        // The owner check is exact here; the owner token only narrows the search.
        if let Some(conversation) = get_conversation(conn, owner, &cid)? {
            hits.push(StoredHit {
                conversation,
                message_id: mid,
                snippet,
                score,
            });
        }
    }
    Ok(hits)
}
