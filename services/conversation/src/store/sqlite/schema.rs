//! Schema, migrations and connection settings.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use crate::error::Result;
use crate::plan::{self, SpanMessage, StoredPlan, TokenLedger};

/// Prepared statements kept per connection (every query shape of this store fits).
const STATEMENT_CACHE: usize = 64;

/// The WAL file is truncated back to this size after a checkpoint that reset it.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// One schema version: its SQL, then an optional rewrite of existing rows.
type Migration = (
    &'static str,
    Option<fn(&Connection) -> rusqlite::Result<()>>,
);

/// Schema versions, applied in order at start (tracked in `PRAGMA user_version`).
const MIGRATIONS: &[Migration] = &[
    // 1: conversations, messages, search index.
    (V1, None),
    // 2: supersede marks and token ledgers; context plans stored by reference.
    (
        "ALTER TABLE messages ADD COLUMN superseded_mark INTEGER; \
         ALTER TABLE messages ADD COLUMN token_ledger BLOB;",
        Some(compact_stored_plans),
    ),
];

const V1: &str = r#"
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
    "#;

/// Rewrites the plans stored in full (rows written before version 2) by reference.
/// Messages superseded before then have no mark and count as superseded from the
/// start: a plan that saw one stays as it was.
fn compact_stored_plans(conn: &Connection) -> rusqlite::Result<()> {
    let conversations = conn
        .prepare("SELECT DISTINCT conversation_rid FROM messages WHERE context IS NOT NULL")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut compacted = 0usize;
    for conv in conversations {
        let rows = conn
            .prepare(
                "SELECT rid, seq, id, role, superseded, context FROM messages \
                 WHERE conversation_rid = ?1 ORDER BY seq",
            )?
            .query_map([conv], |r| {
                let context: Option<Vec<u8>> = r.get(5)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    SpanMessage {
                        seq: r.get(1)?,
                        id: r.get(2)?,
                        role: r.get(3)?,
                        superseded: r.get(4)?,
                        superseded_mark: None,
                        ledger: TokenLedger::default(),
                    },
                    context.and_then(|b| StoredPlan::decode(&b).ok()),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let rids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let plans: Vec<Option<StoredPlan>> = rows.iter().map(|r| r.2.clone()).collect();
        let mut span: Vec<SpanMessage> = rows.into_iter().map(|r| r.1).collect();
        let (new_plans, touched) = plan::compact_conversation(&mut span, &plans);
        for (i, p) in &new_plans {
            conn.execute(
                "UPDATE messages SET context = ?2 WHERE rid = ?1",
                params![rids[*i], p.encode()],
            )?;
        }
        for j in touched {
            conn.execute(
                "UPDATE messages SET token_ledger = ?2 WHERE rid = ?1",
                params![rids[j], prost::Message::encode_to_vec(&span[j].ledger)],
            )?;
        }
        compacted += new_plans.len();
    }
    if compacted > 0 {
        tracing::info!(plans = compacted, "context plans rewritten by reference");
    }
    Ok(())
}

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, (sql, rewrite)) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if let Some(rewrite) = rewrite {
            rewrite(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "conversation database migrated");
    }
    Ok(())
}
