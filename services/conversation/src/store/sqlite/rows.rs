//! Row codecs and the statements that read and write whole rows.

use confab_proto::conversation::v1::{Attachment, Conversation, Message, TokenUsage};
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::search::{index_message, index_title};
use crate::plan::{StoredPlan, TokenLedger};
use crate::store::StoredMessage;

pub(super) const CONV_COLS: &str =
    "id, title, model, system_prompt, pinned, created_at, updated_at, message_count, title_set";
pub(super) const MSG_COLS: &str = "seq, id, conversation_id, role, content, status, attachments, usage, model, \
     context, created_at, updated_at, parent_id, superseded, generation_id, error_message, \
     superseded_mark, token_ledger";

pub(super) fn encode_attachments(a: &[Attachment]) -> Vec<u8> {
    let mut buf = Vec::new();
    for item in a {
        let _ = item.encode_length_delimited(&mut buf);
    }
    buf
}

pub(super) fn decode_attachments(mut buf: &[u8]) -> rusqlite::Result<Vec<Attachment>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(Attachment::decode_length_delimited(&mut buf).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Blob, e.into())
        })?);
    }
    Ok(out)
}

fn decode_opt<M: prost::Message + Default>(
    idx: usize,
    b: Option<Vec<u8>>,
) -> rusqlite::Result<Option<M>> {
    b.map(|b| {
        M::decode(b.as_slice()).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, e.into())
        })
    })
    .transpose()
}

pub(super) fn conversation_from_row(r: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: r.get(0)?,
        title: r.get(1)?,
        model: r.get(2)?,
        system_prompt: r.get(3)?,
        pinned: r.get(4)?,
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
        message_count: r.get::<_, i64>(7)?.clamp(0, i64::from(u32::MAX)) as u32,
        title_set: r.get(8)?,
    })
}

fn blob_error(idx: usize, e: prost::DecodeError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, e.into())
}

pub(super) fn message_from_row(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let plan = r
        .get::<_, Option<Vec<u8>>>(9)?
        .map(|b| StoredPlan::decode(&b).map_err(|e| blob_error(9, e)))
        .transpose()?;
    let ledger = r
        .get::<_, Option<Vec<u8>>>(17)?
        .map(|b| TokenLedger::decode_bytes(&b).map_err(|e| blob_error(17, e)))
        .transpose()?
        .unwrap_or_default();
    Ok(StoredMessage {
        history: plan.as_ref().and_then(|p| p.history),
        superseded_mark: r.get(16)?,
        ledger,
        seq: r.get(0)?,
        message: Message {
            id: r.get(1)?,
            conversation_id: r.get(2)?,
            role: r.get(3)?,
            content: r.get(4)?,
            status: r.get(5)?,
            attachments: decode_attachments(&r.get::<_, Vec<u8>>(6)?)?,
            usage: decode_opt::<TokenUsage>(7, r.get(7)?)?,
            model: r.get(8)?,
            context: plan.map(|p| p.plan),
            created_at_ms: r.get(10)?,
            updated_at_ms: r.get(11)?,
            parent_id: r.get(12)?,
            superseded: r.get(13)?,
            generation_id: r.get(14)?,
            error_message: r.get(15)?,
        },
    })
}

pub(super) fn conversation_rid(
    conn: &Connection,
    owner: &str,
    id: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT rid FROM conversations WHERE id = ?1 AND owner = ?2")?
        .query_row(params![id, owner], |r| r.get(0))
        .optional()
}

pub(super) fn get_conversation(
    conn: &Connection,
    owner: &str,
    id: &str,
) -> rusqlite::Result<Option<Conversation>> {
    conn.prepare_cached(&format!(
        "SELECT {CONV_COLS} FROM conversations WHERE id = ?1 AND owner = ?2"
    ))?
    .query_row(params![id, owner], conversation_from_row)
    .optional()
}

pub(super) fn get_message(
    conn: &Connection,
    owner: &str,
    conversation_id: &str,
    message_id: &str,
) -> rusqlite::Result<Option<(i64, StoredMessage)>> {
    conn.prepare_cached(&format!(
        "SELECT {MSG_COLS}, rid FROM messages WHERE id = ?1 AND conversation_id = ?2 AND owner = ?3"
    ))?
    .query_row(params![message_id, conversation_id, owner], |r| {
        Ok((r.get(18)?, message_from_row(r)?))
    })
    .optional()
}

pub(super) fn insert_message(
    conn: &Connection,
    owner: &str,
    conv_rid: i64,
    seq: i64,
    m: &Message,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_rid, conversation_id, owner, seq, role, content, \
         status, attachments, usage, model, context, created_at, updated_at, parent_id, \
         superseded, generation_id, error_message) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        m.id,
        conv_rid,
        m.conversation_id,
        owner,
        seq,
        m.role,
        m.content,
        m.status,
        encode_attachments(&m.attachments),
        m.usage.as_ref().map(|u| u.encode_to_vec()),
        m.model,
        m.context
            .as_ref()
            .map(|c| StoredPlan::full(c.clone()).encode()),
        m.created_at_ms,
        m.updated_at_ms,
        m.parent_id,
        m.superseded,
        m.generation_id,
        m.error_message,
    ])?;
    let rid = conn.last_insert_rowid();
    index_message(conn, owner, rid, m, true)?;
    Ok(rid)
}

pub(super) fn insert_conversation(
    conn: &Connection,
    owner: &str,
    c: &Conversation,
    next_seq: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO conversations (id, owner, title, model, system_prompt, pinned, title_set, \
         created_at, updated_at, message_count, next_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        c.id,
        owner,
        c.title,
        c.model,
        c.system_prompt,
        c.pinned,
        c.title_set,
        c.created_at_ms,
        c.updated_at_ms,
        c.message_count,
        next_seq
    ])?;
    let rid = conn.last_insert_rowid();
    index_title(conn, owner, rid, &c.id, &c.title, true)?;
    Ok(rid)
}
