//! Document codecs: rows as BSON documents and back.

use confab_proto::conversation::v1::{Attachment, Conversation, Message, TokenUsage};
use mongodb::bson::{Binary, Bson, Document, doc, spec::BinarySubtype};
use prost::Message as _;

use crate::error::{ConversationError, Result};
use crate::plan::{LedgerEntry, StoredPlan, TokenLedger};
use crate::search;
use crate::store::StoredMessage;

pub(super) fn int(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Double(v)) => *v as i64,
        _ => 0,
    }
}

pub(super) fn text(d: &Document, key: &str) -> String {
    d.get_str(key).unwrap_or_default().to_owned()
}

pub(super) fn flag(d: &Document, key: &str) -> bool {
    d.get_bool(key).unwrap_or(false)
}

pub(super) fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

pub(super) fn decode_binary<M: prost::Message + Default>(
    d: &Document,
    key: &str,
) -> Result<Option<M>> {
    match d.get(key) {
        Some(Bson::Binary(b)) => M::decode(b.bytes.as_slice())
            .map(Some)
            .map_err(|e| ConversationError::storage(anyhow::anyhow!("corrupt {key}: {e}"))),
        _ => Ok(None),
    }
}

pub(super) fn conversation_doc(owner: &str, c: &Conversation, next_seq: i64) -> Document {
    doc! {
        "_id": &c.id,
        "owner": owner,
        "title": &c.title,
        "model": &c.model,
        "system_prompt": &c.system_prompt,
        "pinned": c.pinned,
        "title_set": c.title_set,
        "created_at": c.created_at_ms,
        "updated_at": c.updated_at_ms,
        "message_count": i64::from(c.message_count),
        "next_seq": next_seq,
        "terms": search::index_terms(&[&c.title]),
    }
}

pub(super) fn conversation_from(d: &Document) -> Conversation {
    Conversation {
        id: text(d, "_id"),
        title: text(d, "title"),
        model: text(d, "model"),
        system_prompt: text(d, "system_prompt"),
        pinned: flag(d, "pinned"),
        created_at_ms: int(d, "created_at"),
        updated_at_ms: int(d, "updated_at"),
        message_count: int(d, "message_count").clamp(0, i64::from(u32::MAX)) as u32,
        title_set: flag(d, "title_set"),
    }
}

pub(super) fn message_doc(owner: &str, seq: i64, m: &Message) -> Document {
    let attachments: Vec<Document> = m
        .attachments
        .iter()
        .map(|a| {
            doc! {
                "file_id": &a.file_id,
                "filename": &a.filename,
                "mime_type": &a.mime_type,
                "size_bytes": a.size_bytes as i64,
                "is_image": a.is_image,
            }
        })
        .collect();
    doc! {
        "_id": &m.id,
        "owner": owner,
        "conversation_id": &m.conversation_id,
        "seq": seq,
        "role": m.role,
        "content": &m.content,
        "status": m.status,
        "attachments": attachments,
        "usage": m.usage.as_ref().map(|u| binary(u.encode_to_vec())),
        "model": &m.model,
        "context": m.context.as_ref().map(|c| binary(StoredPlan::full(c.clone()).encode())),
        "created_at": m.created_at_ms,
        "updated_at": m.updated_at_ms,
        "parent_id": &m.parent_id,
        "superseded": m.superseded,
        "generation_id": &m.generation_id,
        "error_message": &m.error_message,
        "terms": search::index_terms(&[&m.content]),
    }
}

pub(super) fn attachments_from(d: &Document) -> Vec<Attachment> {
    d.get_array("attachments")
        .map(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .map(|a| Attachment {
                    file_id: text(a, "file_id"),
                    filename: text(a, "filename"),
                    mime_type: text(a, "mime_type"),
                    size_bytes: int(a, "size_bytes").max(0) as u64,
                    is_image: flag(a, "is_image"),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn ledger_from(d: &Document) -> TokenLedger {
    TokenLedger {
        entries: d
            .get_array("token_ledger")
            .map(|a| {
                a.iter()
                    .filter_map(Bson::as_document)
                    .map(|e| LedgerEntry {
                        model: text(e, "model"),
                        tokens: int(e, "tokens").clamp(0, i64::from(u32::MAX)) as u32,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub(super) fn plan_from(d: &Document) -> Result<Option<StoredPlan>> {
    match d.get("context") {
        Some(Bson::Binary(b)) => StoredPlan::decode(b.bytes.as_slice())
            .map(Some)
            .map_err(|e| ConversationError::storage(anyhow::anyhow!("corrupt context: {e}"))),
        _ => Ok(None),
    }
}

pub(super) fn mark_from(d: &Document) -> Option<i64> {
    d.contains_key("superseded_mark")
        .then(|| int(d, "superseded_mark"))
}

pub(super) fn message_from(d: &Document) -> Result<StoredMessage> {
    let plan = plan_from(d)?;
    Ok(StoredMessage {
        history: plan.as_ref().and_then(|p| p.history),
        superseded_mark: mark_from(d),
        ledger: ledger_from(d),
        seq: int(d, "seq"),
        message: Message {
            id: text(d, "_id"),
            conversation_id: text(d, "conversation_id"),
            role: int(d, "role") as i32,
            content: text(d, "content"),
            status: int(d, "status") as i32,
            attachments: attachments_from(d),
            usage: decode_binary::<TokenUsage>(d, "usage")?,
            model: text(d, "model"),
            context: plan.map(|p| p.plan),
            created_at_ms: int(d, "created_at"),
            updated_at_ms: int(d, "updated_at"),
            parent_id: text(d, "parent_id"),
            superseded: flag(d, "superseded"),
            generation_id: text(d, "generation_id"),
            error_message: text(d, "error_message"),
        },
    })
}

pub(super) fn ledger_bson(l: &TokenLedger) -> Vec<Document> {
    l.entries
        .iter()
        .map(|e| doc! {"model": &e.model, "tokens": i64::from(e.tokens)})
        .collect()
}

/// Fields never sent back to the service.
pub(super) fn no_terms() -> Document {
    doc! { "terms": 0 }
}
