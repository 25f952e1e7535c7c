//! SQLite store (embedded default): one file in WAL mode, one writer thread and a small
//! pool of read-only connections (used from `spawn_blocking`), so no query runs on the
//! async runtime. Search uses an FTS5 table ranked with bm25 and cut with snippet();
//! rows carry a hashed owner token so a search only walks its owner's rows.
//!
//! Writes use group commit: the writer thread takes every write waiting in its queue
//! (up to [`MAX_BATCH`]) and runs them in one transaction, each inside its own savepoint
//! (a failing write is rolled back alone), then answers each caller once the batch is
//! committed. Under load this turns N commits (WAL frames, FTS segments) into one.
//! Checkpoints run on their own thread and connection, never inside a caller's commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use confab_proto::conversation::v1::{Attachment, ContextPlan, Conversation, Message, TokenUsage};
use parking_lot::Mutex;
use prost::Message as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::{
    ConversationPatch, ConversationQuery, ConversationStore, ImportItem, MessagePatch,
    MessageQuery, StoredHit, StoredMessage,
};
use crate::error::{ConversationError, Result};
use crate::search::{MARK_CLOSE, MARK_OPEN};

/// Matching rows a search reads at most to find one hit per conversation.
const MAX_SEARCH_ROWS: i64 = 20_000;

/// Reader threads: one per core, 2 to 4 (reads are CPU-bound on cached pages; more
/// threads than cores only add switches). WAL lets them run beside the writer.
fn reader_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// Prepared statements kept per connection (every query shape of this file fits).
const STATEMENT_CACHE: usize = 64;

/// The checkpointer runs at least this often while the WAL has new frames...
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// ...and sooner after this many committed batches.
const CHECKPOINT_AFTER_BATCHES: u32 = 200;
/// The WAL file is truncated back to this size after a checkpoint that reset it.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Schema versions, applied in order at start (tracked in `PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 1: conversations, messages, search index.
    r#"
    CREATE TABLE conversations (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        system_prompt TEXT NOT NULL,
        pinned INTEGER NOT NULL,
        title_set INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        message_count INTEGER NOT NULL DEFAULT 0,
        next_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_by_activity ON conversations (owner, updated_at DESC, id DESC);
    CREATE INDEX conversations_pinned_first ON conversations (owner, pinned DESC, updated_at DESC, id DESC);
    CREATE TABLE messages (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        conversation_rid INTEGER NOT NULL,
        conversation_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role INTEGER NOT NULL,
        content TEXT NOT NULL,
        status INTEGER NOT NULL,
        attachments BLOB NOT NULL,
        usage BLOB,
        model TEXT NOT NULL,
        context BLOB,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        parent_id TEXT NOT NULL,
        superseded INTEGER NOT NULL DEFAULT 0,
        generation_id TEXT NOT NULL,
        error_message TEXT NOT NULL
    );
    CREATE UNIQUE INDEX messages_in_order ON messages (conversation_rid, seq);
    -- Title rows use rowid = -conversations.rid, message rows rowid = messages.rid.
    CREATE VIRTUAL TABLE search_fts USING fts5(
        owner_key, title, body, conversation_id UNINDEXED, message_id UNINDEXED,
        tokenize = 'unicode61'
    );
    "#,
];

const CONV_COLS: &str =
    "id, title, model, system_prompt, pinned, created_at, updated_at, message_count, title_set";
const MSG_COLS: &str = "seq, id, conversation_id, role, content, status, attachments, usage, model, \
     context, created_at, updated_at, parent_id, superseded, generation_id, error_message";

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

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// One queued write: runs inside the batch transaction, answers after the commit.
trait WriteJob: Send {
    /// Runs the write; `false` when it failed (the caller rolls its savepoint back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Sends the outcome; `commit` is why the batch did not commit, if it did not.
    fn answer(self: Box<Self>, commit: Option<&BatchError>);
}

struct Job<R, F> {
    f: Option<F>,
    out: Option<Result<R>>,
    reply: tokio::sync::oneshot::Sender<Result<R>>,
}

impl<R, F> WriteJob for Job<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let f = self.f.take().expect("a job runs once");
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(ConversationError::storage(anyhow!("sqlite write panicked"))));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn answer(self: Box<Self>, commit: Option<&BatchError>) {
        let out = match (self.out, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(r)), None) => Ok(r),
            (Some(Ok(_)) | None, Some(e)) => Err(e.to_error()),
            (None, None) => Err(ConversationError::storage(anyhow!("sqlite write not run"))),
        };
        let _ = self.reply.send(out);
    }
}

/// Why a batch did not commit, told to each of its writers.
struct BatchError {
    busy: bool,
    message: String,
}

impl BatchError {
    fn new(e: &rusqlite::Error) -> Self {
        Self {
            busy: matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            message: e.to_string(),
        }
    }

    fn to_error(&self) -> ConversationError {
        let e = anyhow!("sqlite transaction failed: {}", self.message);
        if self.busy {
            ConversationError::Unavailable(e)
        } else {
            ConversationError::storage(e)
        }
    }
}

/// One queued read: gets the reader's connection (or why it could not open one).
type ReadJob = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// A reader thread: takes reads from the shared queue, one at a time, on its own
/// read-only connection (opened at the first read, again after a failure to open).
fn reader_loop(path: &Path, reads: &Mutex<std::sync::mpsc::Receiver<ReadJob>>) {
    let mut conn: Option<Connection> = None;
    loop {
        let Ok(job) = reads.lock().recv() else {
            return;
        };
        if conn.is_none() {
            match open_reader(path) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        let c = conn.as_ref().expect("opened above");
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(c)))).is_err() {
            // The caller sees its reply dropped; a fresh connection for the next read.
            conn = None;
        }
    }
}

/// The writer thread: one transaction per batch of queued writes.
fn writer_loop(
    conn: Connection,
    jobs: std::sync::mpsc::Receiver<Box<dyn WriteJob>>,
    checkpoint: std::sync::mpsc::SyncSender<()>,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    let mut since_checkpoint = 0u32;
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = run_batch(&conn, &mut batch).err();
        if let Some(e) = &commit {
            tracing::error!(error = %e, writes = batch.len(), "sqlite batch commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        let commit = commit.as_ref().map(BatchError::new);
        for job in batch.drain(..) {
            job.answer(commit.as_ref());
        }
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_AFTER_BATCHES {
            since_checkpoint = 0;
            let _ = checkpoint.try_send(());
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    if let [only] = batch {
        // Alone in its transaction: a failed write rolls the whole transaction back.
        if !only.run(conn) {
            conn.prepare_cached("ROLLBACK")?.execute([])?;
            return Ok(());
        }
    } else {
        for job in batch.iter_mut() {
            conn.prepare_cached("SAVEPOINT job")?.execute([])?;
            if !job.run(conn) {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            }
            conn.prepare_cached("RELEASE job")?.execute([])?;
        }
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

/// Checkpoints the WAL on its own connection (writes go on meanwhile), when the writer
/// asks or every [`CHECKPOINT_EVERY`]; ends when the writer thread does.
fn checkpoint_loop(path: PathBuf, wake: std::sync::mpsc::Receiver<()>) {
    let conn = match Connection::open(&path).and_then(|c| {
        configure(&c)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "sqlite checkpointer could not open the database");
            return;
        }
    };
    loop {
        match wake.recv_timeout(CHECKPOINT_EVERY) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "sqlite checkpoint failed");
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "conversation database migrated");
    }
    Ok(())
}

/// A stable 64-bit FNV-1a token of the owner, so FTS can filter by owner as a term.
fn owner_key(owner: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in owner.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("u{h:016x}")
}

fn encode_attachments(a: &[Attachment]) -> Vec<u8> {
    let mut buf = Vec::new();
    for item in a {
        let _ = item.encode_length_delimited(&mut buf);
    }
    buf
}

fn decode_attachments(mut buf: &[u8]) -> rusqlite::Result<Vec<Attachment>> {
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

fn conversation_from_row(r: &Row<'_>) -> rusqlite::Result<Conversation> {
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

fn message_from_row(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
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
            context: decode_opt::<ContextPlan>(9, r.get(9)?)?,
            created_at_ms: r.get(10)?,
            updated_at_ms: r.get(11)?,
            parent_id: r.get(12)?,
            superseded: r.get(13)?,
            generation_id: r.get(14)?,
            error_message: r.get(15)?,
        },
    })
}

fn conversation_rid(conn: &Connection, owner: &str, id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT rid FROM conversations WHERE id = ?1 AND owner = ?2")?
        .query_row(params![id, owner], |r| r.get(0))
        .optional()
}

fn get_conversation(
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

fn get_message(
    conn: &Connection,
    owner: &str,
    conversation_id: &str,
    message_id: &str,
) -> rusqlite::Result<Option<(i64, StoredMessage)>> {
    conn.prepare_cached(&format!(
        "SELECT {MSG_COLS}, rid FROM messages WHERE id = ?1 AND conversation_id = ?2 AND owner = ?3"
    ))?
    .query_row(params![message_id, conversation_id, owner], |r| {
        Ok((r.get(16)?, message_from_row(r)?))
    })
    .optional()
}

/// `fresh`: a new row, never indexed (no old entry to delete).
fn index_title(
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

fn index_message(
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

fn insert_message(
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
        m.context.as_ref().map(|c| c.encode_to_vec()),
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

fn insert_conversation(
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
    ) -> Result<Option<Message>> {
        let (owner, cid, mid) = (
            owner.to_owned(),
            conversation_id.to_owned(),
            message_id.to_owned(),
        );
        self.read(move |conn| Ok(get_message(conn, &owner, &cid, &mid)?.map(|(_, m)| m.message)))
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
                m.context = p.context;
            }
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
                    m.context.as_ref().map(|c| c.encode_to_vec()),
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
                    "UPDATE messages SET superseded = 1, updated_at = MAX(updated_at, ?3) \
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
        let owner = owner.to_owned();
        let words: Vec<String> = terms
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect();
        let expr = format!(
            "owner_key : \"{}\" AND {{title body}} : ({})",
            owner_key(&owner),
            words.join(" AND ")
        );
        let open = MARK_OPEN.to_string();
        let close = MARK_CLOSE.to_string();
        self.read(move |conn| {
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
                if let Some(conversation) = get_conversation(conn, &owner, &cid)? {
                    hits.push(StoredHit { conversation, message_id: mid, snippet, score });
                }
            }
            Ok(hits)
        })
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
