//! SQLite store (embedded default): one file in WAL mode, one writer thread and a small
//! pool of read-only connections (used from `spawn_blocking`), so no query runs on the
//! async runtime. Search uses an FTS5 table ranked with bm25 and cut with snippet();
//! rows carry a hashed owner token so a search only walks its owner's rows.
//!
//! Writes use group commit: the writer thread takes every write waiting in its queue
//! (up to `threads::MAX_BATCH`) and runs them in one transaction, each inside its own savepoint
//! (a failing write is rolled back alone), then answers each caller once the batch is
//! committed. Under load this turns N commits (WAL frames, FTS segments) into one.
//! Checkpoints run on their own thread and connection, never inside a caller's commit.

//!
//! Files: `schema` (migrations, connection settings), `threads` (writer, readers,
//! checkpointer), `rows` (row codecs and whole-row statements), `search` (FTS5).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use confab_proto::conversation::v1::{Conversation, Message};
use parking_lot::Mutex;
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    ConversationPatch, ConversationQuery, ConversationStore, ImportItem, MessagePatch,
    MessageQuery, StoredHit, StoredMessage,
};
use crate::error::{ConversationError, Result};
use crate::plan::{self, LedgerAddition, StoredPlan};

mod rows;
mod schema;
mod search;
mod threads;

use rows::*;
use schema::{WAL_SIZE_LIMIT, configure, migrate};
use search::{index_message, index_title};
use threads::{Job, ReadJob, WriteJob, checkpoint_loop, reader_loop, reader_threads, writer_loop};

pub struct SqliteStore {
    path: PathBuf,
    writer: std::sync::mpsc::Sender<Box<dyn WriteJob>>,
    readers: std::sync::mpsc::Sender<ReadJob>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn join_err(e: tokio::task::JoinError) -> ConversationError {
    ConversationError::storage(anyhow!("sqlite task failed: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let mut conn = Connection::open(&p)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            configure(&conn)?;
            // Checkpoints run on the checkpointer thread, not inside a write's commit.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(join_err)??;
        let (writer, jobs) = std::sync::mpsc::channel();
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("conversation-sqlite-writer".into())
            .spawn(move || writer_loop(conn, jobs, wake))
            .map_err(ConversationError::storage)?;
        let p = path.clone();
        std::thread::Builder::new()
            .name("conversation-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(p, woken))
            .map_err(ConversationError::storage)?;
        let (readers, reads) = std::sync::mpsc::channel();
        let reads = Arc::new(Mutex::new(reads));
        for i in 0..reader_threads() {
            let (p, reads) = (path.clone(), reads.clone());
            std::thread::Builder::new()
                .name(format!("conversation-sqlite-reader-{i}"))
                .spawn(move || reader_loop(&p, &reads))
                .map_err(ConversationError::storage)?;
        }
        Ok(Self {
            path,
            writer,
            readers,
        })
    }

    /// Queues a write for the writer thread; it runs inside a transaction (shared with
    /// the other writes of its batch) and is answered once that transaction committed.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || ConversationError::storage(anyhow!("sqlite writer thread stopped"));
        self.writer
            .send(Box::new(Job {
                f: Some(f),
                out: None,
                reply,
            }))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs a read on one of the reader threads (each with its own connection).
    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || ConversationError::storage(anyhow!("sqlite reader threads stopped"));
        self.readers
            .send(Box::new(move |conn: Result<&Connection>| {
                let out = conn.and_then(f);
                let _ = reply.send(out);
            }))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

#[async_trait::async_trait]
impl ConversationStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_conversation(&self, owner: &str, c: Conversation) -> Result<()> {
        let owner = owner.to_owned();
        self.write(move |conn| {
            insert_conversation(conn, &owner, &c, 0)?;
            Ok(())
        })
        .await
    }

    async fn list_conversations(
        &self,
        owner: &str,
        q: &ConversationQuery,
    ) -> Result<Vec<Conversation>> {
        let owner = owner.to_owned();
        let q = q.clone();
        self.read(move |conn| {
            let order = if q.pinned_first {
                "ORDER BY pinned DESC, updated_at DESC, id DESC"
            } else {
                "ORDER BY updated_at DESC, id DESC"
            };
            let rows = match (&q.after, q.pinned_first) {
                (None, _) => {
                    let sql = format!(
                        "SELECT {CONV_COLS} FROM conversations WHERE owner = ?1 {order} LIMIT ?2"
                    );
                    conn.prepare_cached(&sql)?
                        .query_map(params![owner, q.limit], conversation_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
                (Some(c), false) => {
                    let sql = format!(
                        "SELECT {CONV_COLS} FROM conversations WHERE owner = ?1 \
                         AND (updated_at, id) < (?2, ?3) {order} LIMIT ?4"
                    );
                    conn.prepare_cached(&sql)?
                        .query_map(
                            params![owner, c.updated_at_ms, c.id, q.limit],
                            conversation_from_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
                (Some(c), true) => {
                    let sql = format!(
                        "SELECT {CONV_COLS} FROM conversations WHERE owner = ?1 \
                         AND (pinned, updated_at, id) < (?2, ?3, ?4) {order} LIMIT ?5"
                    );
                    conn.prepare_cached(&sql)?
                        .query_map(
                            params![owner, c.pinned, c.updated_at_ms, c.id, q.limit],
                            conversation_from_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            Ok(rows)
        })
        .await
    }

    async fn get_conversation(&self, owner: &str, id: &str) -> Result<Option<Conversation>> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.read(move |conn| Ok(get_conversation(conn, &owner, &id)?))
            .await
    }

    async fn update_conversation(
        &self,
        owner: &str,
        id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>> {
        let (owner, id, p) = (owner.to_owned(), id.to_owned(), patch.clone());
        self.write(move |conn| {
            let Some(rid) = conversation_rid(conn, &owner, &id)? else {
                return Ok(None);
            };
            conn.prepare_cached(
                "UPDATE conversations SET \
                 title = COALESCE(?2, title), title_set = CASE WHEN ?2 IS NULL THEN title_set ELSE 1 END, \
                 model = COALESCE(?3, model), system_prompt = COALESCE(?4, system_prompt), \
                 pinned = COALESCE(?5, pinned), updated_at = MAX(updated_at, COALESCE(?6, updated_at)) \
                 WHERE rid = ?1",
            )?
            .execute(params![rid, p.title, p.model, p.system_prompt, p.pinned, p.touch_at_ms])?;
            if let Some(title) = &p.title {
                index_title(conn, &owner, rid, &id, title, false)?;
            }
            let c = get_conversation(conn, &owner, &id)?;
            Ok(c)
        })
        .await
    }

    async fn delete_conversation(&self, owner: &str, id: &str) -> Result<Option<Vec<String>>> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.write(move |conn| {
            let Some(rid) = conversation_rid(conn, &owner, &id)? else {
                return Ok(None);
            };
            let blobs = conn
                .prepare("SELECT attachments FROM messages WHERE conversation_rid = ?1 AND length(attachments) > 0 ORDER BY seq")?
                .query_map([rid], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut attachments = Vec::new();
            for b in blobs {
                attachments.extend(decode_attachments(&b)?);
            }
            conn.execute(
                "DELETE FROM search_fts WHERE rowid IN (SELECT rid FROM messages WHERE conversation_rid = ?1)",
                [rid],
            )?;
            conn.execute("DELETE FROM search_fts WHERE rowid = ?1", [-rid])?;
            conn.execute("DELETE FROM messages WHERE conversation_rid = ?1", [rid])?;
            conn.execute("DELETE FROM conversations WHERE rid = ?1", [rid])?;
            Ok(Some(super::file_ids(&attachments)))
        })
        .await
    }

    async fn list_messages(
        &self,
        owner: &str,
        conversation_id: &str,
        q: &MessageQuery,
    ) -> Result<Option<Vec<StoredMessage>>> {
        let (owner, cid, q) = (owner.to_owned(), conversation_id.to_owned(), q.clone());
        self.read(move |conn| {
            let Some(rid) = conversation_rid(conn, &owner, &cid)? else {
                return Ok(None);
            };
            let (cmp, order) = if q.newest_first {
                ("<", "DESC")
            } else {
                (">", "ASC")
            };
            let after = q
                .after_seq
                .unwrap_or(if q.newest_first { i64::MAX } else { -1 });
            let hidden = if q.include_superseded {
                ""
            } else {
                "AND superseded = 0"
            };
            let cols = if q.omit_context {
                MSG_COLS.replace(" context,", " NULL,")
            } else {
                MSG_COLS.to_owned()
            };
            let sql = format!(
                "SELECT {cols} FROM messages WHERE conversation_rid = ?1 AND seq {cmp} ?2 {hidden} \
                 ORDER BY seq {order} LIMIT ?3"
            );
            let rows = conn
                .prepare_cached(&sql)?
                .query_map(params![rid, after, q.limit], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(rows))
        })
        .await
    }

    async fn get_message(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<Option<StoredMessage>> {
        let (owner, cid, mid) = (
            owner.to_owned(),
            conversation_id.to_owned(),
            message_id.to_owned(),
        );
        self.read(move |conn| Ok(get_message(conn, &owner, &cid, &mid)?.map(|(_, m)| m)))
            .await
    }

    async fn append_message(&self, owner: &str, m: Message) -> Result<Option<Message>> {
        let owner = owner.to_owned();
        self.write(move |conn| {
            // One statement finds, counts and touches the conversation; the message's
            // position is the sequence number before the increment.
            let Some((rid, seq)): Option<(i64, i64)> = conn
                .prepare_cached(
                    "UPDATE conversations SET next_seq = next_seq + 1, message_count = message_count + 1, \
                     updated_at = MAX(updated_at, ?3) WHERE id = ?1 AND owner = ?2 \
                     RETURNING rid, next_seq - 1",
                )?
                .query_row(params![m.conversation_id, owner, m.created_at_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            insert_message(conn, &owner, rid, seq, &m)?;
            Ok(Some(m))
        })
        .await
    }

    async fn update_message(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
        patch: &MessagePatch,
    ) -> Result<Option<Message>> {
        let (owner, cid, mid, p) = (
            owner.to_owned(),
            conversation_id.to_owned(),
            message_id.to_owned(),
            patch.clone(),
        );
        self.write(move |conn| {
            let Some((rid, stored)) = get_message(conn, &owner, &cid, &mid)? else {
                return Ok(None);
            };
            let mut plan = stored.stored_plan();
            let mut m = stored.message;
            let content_changed = p.content.as_ref().is_some_and(|c| *c != m.content);
            if let Some(c) = p.content {
                m.content = c;
            }
            if let Some(s) = p.status {
                m.status = s;
            }
            if p.usage.is_some() {
                m.usage = p.usage;
            }
            if p.context.is_some() {
                plan = p.context;
            }
            m.context = plan.as_ref().map(|p| p.plan.clone());
            if let Some(model) = p.model {
                m.model = model;
            }
            if let Some(e) = p.error_message {
                m.error_message = e;
            }
            m.updated_at_ms = m.updated_at_ms.max(p.updated_at_ms);
            conn.prepare_cached(
                "UPDATE messages SET content = ?2, status = ?3, usage = ?4, context = ?5, model = ?6, \
                 error_message = ?7, updated_at = ?8 WHERE rid = ?1",
            )?
            .execute(params![
                    rid,
                    m.content,
                    m.status,
                    m.usage.as_ref().map(|u| u.encode_to_vec()),
                    plan.as_ref().map(StoredPlan::encode),
                    m.model,
                    m.error_message,
                    m.updated_at_ms
                ])?;
            if content_changed {
                index_message(conn, &owner, rid, &m, false)?;
            }
            Ok(Some(m))
        })
        .await
    }

    async fn add_token_counts(
        &self,
        owner: &str,
        conversation_id: &str,
        additions: Vec<LedgerAddition>,
    ) -> Result<()> {
        if additions.is_empty() {
            return Ok(());
        }
        let (owner, cid) = (owner.to_owned(), conversation_id.to_owned());
        self.write(move |conn| {
            for (mid, model, tokens) in &additions {
                let Some((rid, stored)) = get_message(conn, &owner, &cid, mid)? else {
                    continue;
                };
                let mut ledger = stored.ledger;
                let before = ledger.entries.len();
                plan::add_to_ledger(&mut ledger, model, *tokens);
                if ledger.entries.len() != before {
                    conn.prepare_cached("UPDATE messages SET token_ledger = ?2 WHERE rid = ?1")?
                        .execute(params![rid, ledger.encode_to_vec()])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn supersede_messages(
        &self,
        owner: &str,
        conversation_id: &str,
        from_message_id: &str,
        inclusive: bool,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>> {
        let (owner, cid, mid) = (
            owner.to_owned(),
            conversation_id.to_owned(),
            from_message_id.to_owned(),
        );
        self.write(move |conn| {
            let Some((_, from)) = get_message(conn, &owner, &cid, &mid)? else {
                return Ok(None);
            };
            let Some(conv_rid) = conversation_rid(conn, &owner, &cid)? else {
                return Ok(None);
            };
            let first = if inclusive { from.seq } else { from.seq + 1 };
            let marked = conn
                .prepare(
                    "UPDATE messages SET superseded = 1, updated_at = MAX(updated_at, ?3), \
                     superseded_mark = (SELECT next_seq FROM conversations WHERE rid = ?1) \
                     WHERE conversation_rid = ?1 AND seq >= ?2 AND superseded = 0 RETURNING rid, id, seq",
                )?
                .query_map(params![conv_rid, first, now_ms], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut marked = marked;
            marked.sort_by_key(|m| m.2);
            for (rid, _, _) in &marked {
                conn.prepare_cached("DELETE FROM search_fts WHERE rowid = ?1")?
                    .execute([rid])?;
            }
            Ok(Some(marked.into_iter().map(|m| m.1).collect()))
        })
        .await
    }

    async fn search(&self, owner: &str, terms: &[String], limit: u32) -> Result<Vec<StoredHit>> {
        let (owner, terms) = (owner.to_owned(), terms.to_vec());
        self.read(move |conn| Ok(search::search(conn, &owner, &terms, limit)?))
            .await
    }

    async fn import(&self, owner: &str, items: Vec<ImportItem>) -> Result<()> {
        let owner = owner.to_owned();
        self.write(move |conn| {
            for item in &items {
                let rid = insert_conversation(
                    conn,
                    &owner,
                    &item.conversation,
                    item.messages.len() as i64,
                )?;
                for (seq, m) in item.messages.iter().enumerate() {
                    insert_message(conn, &owner, rid, seq as i64, m)?;
                }
            }
            Ok(())
        })
        .await
    }
}
