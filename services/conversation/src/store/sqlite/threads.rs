//! The writer thread (group commit), the reader threads and the checkpointer.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use parking_lot::Mutex;
use rusqlite::Connection;

use super::schema::{configure, open_reader};
use crate::error::{ConversationError, Result};

/// Reader threads: one per core, 2 to 4 (reads are CPU-bound on cached pages; more
/// threads than cores only add switches). WAL lets them run beside the writer.
pub(super) fn reader_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// The checkpointer runs at least this often while the WAL has new frames...
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// ...and sooner after this many committed batches.
const CHECKPOINT_AFTER_BATCHES: u32 = 200;

/// One queued write: runs inside the batch transaction, answers after the commit.
pub(super) trait WriteJob: Send {
    /// Runs the write; `false` when it failed (the caller rolls its savepoint back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Sends the outcome; `commit` is why the batch did not commit, if it did not.
    fn answer(self: Box<Self>, commit: Option<&BatchError>);
}

pub(super) struct Job<R, F> {
    pub(super) f: Option<F>,
    pub(super) out: Option<Result<R>>,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<R>>,
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
pub(super) struct BatchError {
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
pub(super) type ReadJob = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// A reader thread: takes reads from the shared queue, one at a time, on its own
/// read-only connection (opened at the first read, again after a failure to open).
pub(super) fn reader_loop(path: &Path, reads: &Mutex<std::sync::mpsc::Receiver<ReadJob>>) {
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
pub(super) fn writer_loop(
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
pub(super) fn checkpoint_loop(path: PathBuf, wake: std::sync::mpsc::Receiver<()>) {
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
