//! The embedded model: SmolLM2-135M-Instruct (GGUF, Q4_1) on CPU with llama.cpp (through
//! `llama-cpp-2`, built from source for x86-64-v3). candle was measured first: it has no
//! SIMD kernel for Q4_1, so it ran prefill at a tenth of llama.cpp's speed on this file.
//!
//! The weights load once (lazily). Generations go through one fair [`ModelQueue`] to a
//! fixed set of slots; each slot is a thread that owns a llama.cpp context and keeps the
//! KV cache of its last conversation, so the next turn only prefills what is new (the
//! queue gives a request the free slot that has most of its prompt cached). Text goes out
//! through a bounded channel; when the receiver is dropped the slot stops before the
//! next batch or token.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use parking_lot::Mutex;
use tokio::sync::{OnceCell, mpsc};

use super::queue::{ModelQueue, Permit};
use super::{
    Finish, ModelEvent, ModelProvider, ModelRequest, ModelSpec, ModelStream, ProviderError, Role,
    Usage,
};

pub const MODEL_ID: &str = "smollm2-135m-instruct";
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const CONTEXT_WINDOW: u32 = 8192;
const MAX_OUTPUT: u32 = 512;
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
/// Prompt tokens per forward pass (llama.cpp's default; Stop is checked between batches).
const BATCH: u32 = 512;
/// Requests allowed to wait for a slot; past that the model answers "busy".
const MAX_WAITING: usize = 64;

/// llama.cpp's backend is process-wide and may be initialised only once.
fn backend() -> Result<&'static LlamaBackend, ProviderError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| ProviderError::Internal(format!("llama.cpp backend: {e}")))
}

/// How the CPU is shared: `slots` generations at once, each with `threads` threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedLimits {
    pub slots: usize,
    pub threads: usize,
}

impl Default for EmbeddedLimits {
    /// One generation at a time (on a small CPU two at once only halve each other's
    /// speed; the queue keeps the wait fair) on half the cores, as llama-cpp-python does:
    /// llama.cpp's threads spin-wait for each other, and on cores shared with the rest of
    /// the process (or other processes) all-core runs collapse.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            slots: 1,
            threads: (cores / 2).max(1),
        }
    }
}

struct Job {
    prompt: Vec<LlamaToken>,
    max_tokens: usize,
    temperature: Option<f32>,
    tx: Tx,
    /// Held while the slot works on this job; its drop frees the slot.
    _permit: Permit,
}

struct Slot {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Tokens whose keys and values this slot's context holds (its prefix cache).
    cached: Arc<Mutex<Vec<LlamaToken>>>,
}

struct Loaded {
    model: Arc<LlamaModel>,
    slots: Vec<Slot>,
    queue: ModelQueue,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    prefilled: AtomicU64,
    reused: AtomicU64,
}

/// Prompt tokens the model computed, and those it took from a slot's prefix cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefillStats {
    pub prefilled: u64,
    pub reused: u64,
}

pub struct EmbeddedProvider {
    path: PathBuf,
    loaded: OnceCell<Arc<Loaded>>,
    /// Sampling temperature; `None` is greedy (deterministic, used by tests).
    temperature: Option<f32>,
    limits: EmbeddedLimits,
}

impl EmbeddedProvider {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            loaded: OnceCell::new(),
            temperature: Some(0.7),
            limits: EmbeddedLimits::default(),
        }
    }

    pub fn greedy(mut self) -> Self {
        self.temperature = None;
        self
    }

    pub fn with_limits(mut self, limits: EmbeddedLimits) -> Self {
        self.limits = EmbeddedLimits {
            slots: limits.slots.max(1),
            threads: limits.threads.max(1),
        };
        self
    }

    pub fn spec() -> ModelSpec {
        ModelSpec {
            id: MODEL_ID.into(),
            display_name: "SmolLM2 135M Instruct (embedded, CPU)".into(),
            provider: "embedded",
            vision: false,
            context_window: CONTEXT_WINDOW,
            max_output_tokens: MAX_OUTPUT,
            embedded: true,
        }
    }

    async fn load(&self) -> Result<Arc<Loaded>, ProviderError> {
        self.loaded
            .get_or_try_init(|| async {
                let path = self.path.clone();
                let limits = self.limits;
                tokio::task::spawn_blocking(move || load(&path, limits))
                    .await
                    .map_err(|e| ProviderError::Internal(format!("model loader panicked: {e}")))?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Totals since the model loaded (zero before).
    pub fn prefill_stats(&self) -> PrefillStats {
        self.loaded
            .get()
            .map_or_else(PrefillStats::default, |l| PrefillStats {
                prefilled: l.stats.prefilled.load(Ordering::Relaxed),
                reused: l.stats.reused.load(Ordering::Relaxed),
            })
    }

    /// ChatML tokens for `request`: the template's markers parsed as special tokens, the
    /// messages' text never (a user typing `<|im_start|>` gets text, not a new turn).
    /// Each message is tokenised on its own, so a conversation's earlier turns give the
    /// same tokens every time and the prefix cache matches them.
    fn prompt_tokens(model: &LlamaModel, request: &ModelRequest) -> Vec<LlamaToken> {
        let vocab = model.vocab();
        let mut out = Vec::new();
        let turn = |role: &str, text: &str, out: &mut Vec<LlamaToken>| {
            out.extend(vocab.tokenize(format!("<|im_start|>{role}\n").as_bytes(), false, true));
            out.extend(vocab.tokenize(text.as_bytes(), false, false));
            out.extend(vocab.tokenize(b"<|im_end|>\n", false, true));
        };
        if request.messages.first().map(|m| m.role) != Some(Role::System) {
            turn("system", DEFAULT_SYSTEM, &mut out);
        }
        for m in &request.messages {
            turn(m.role.as_str(), &m.joined_text(), &mut out);
        }
        out.extend(vocab.tokenize(b"<|im_start|>assistant\n", false, true));
        out
    }

    /// Like [`ModelProvider::stream`], queued fairly as `user`'s request.
    pub async fn stream_as(
        &self,
        user: &str,
        request: ModelRequest,
    ) -> Result<ModelStream, ProviderError> {
        let loaded = self.load().await?;
        let prompt = Self::prompt_tokens(&loaded.model, &request);
        let max_tokens = request.max_output_tokens.clamp(1, MAX_OUTPUT) as usize;
        if prompt.len() + max_tokens > CONTEXT_WINDOW as usize {
            return Err(ProviderError::ContextTooLarge(format!(
                "{} prompt tokens + {max_tokens} for the answer exceed the window of {CONTEXT_WINDOW}",
                prompt.len()
            )));
        }
        let ticket = loaded
            .queue
            .join(user)
            .map_err(|e| ProviderError::RateLimited {
                retry_after_seconds: Some(5),
                message: e.to_string(),
            })?;
        let (tx, rx) = mpsc::channel(32);
        let temperature = self.temperature;
        tokio::spawn(async move {
            let caches: Vec<_> = loaded.slots.iter().map(|s| s.cached.clone()).collect();
            let score = |slot: usize| common_prefix(&caches[slot].lock(), &prompt);
            let waiting = ticket.wait(
                |ahead| tracing::debug!(ahead, "waiting for the embedded model"),
                score,
            );
            // Stop while queued: the receiver went away, so give the place up.
            let permit = tokio::select! {
                p = waiting => p,
                () = tx.closed() => return,
            };
            let slot = &loaded.slots[permit.slot()];
            let job = Job {
                prompt,
                max_tokens,
                temperature,
                tx,
                _permit: permit,
            };
            if let Err(std::sync::mpsc::TrySendError::Disconnected(job)) = slot.jobs.try_send(job) {
                let _ = job
                    .tx
                    .send(Err(ProviderError::Internal("the model slot ended".into())))
                    .await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn load(path: &Path, limits: EmbeddedLimits) -> Result<Loaded, ProviderError> {
    if !path.is_file() {
        return Err(ProviderError::Unavailable(format!(
            "the embedded model file {} is missing; run scripts/fetch-model.sh or set CONFAB_MODEL_PATH",
            path.display()
        )));
    }
    let backend = backend()?;
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .map_err(|e| ProviderError::Internal(format!("loading {}: {e}", path.display())))?;
    let model = Arc::new(model);
    let stats = Arc::new(Counters::default());
    let mut slots = Vec::with_capacity(limits.slots);
    for i in 0..limits.slots {
        // A slot's context is created before the next (llama.cpp must not create two
        // contexts of one model at once); the thread reports when its context is ready.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let cached = Arc::new(Mutex::new(Vec::new()));
        let (m, c, st) = (model.clone(), cached.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("embedded-model-{i}"))
            .spawn(move || slot_thread(backend, &m, limits.threads, &c, &st, &rx, &ready_tx))
            .map_err(|e| ProviderError::Internal(format!("starting a model thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| ProviderError::Internal("a model thread ended at start".into()))??;
        slots.push(Slot { jobs, cached });
    }
    Ok(Loaded {
        model,
        slots,
        queue: ModelQueue::new(limits.slots, MAX_WAITING),
        stats,
    })
}

fn slot_thread(
    backend: &LlamaBackend,
    model: &LlamaModel,
    threads: usize,
    cached: &Mutex<Vec<LlamaToken>>,
    stats: &Counters,
    jobs: &std::sync::mpsc::Receiver<Job>,
    ready: &std::sync::mpsc::Sender<Result<(), ProviderError>>,
) {
    let threads = i32::try_from(threads).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(CONTEXT_WINDOW))
        .with_n_batch(BATCH)
        .with_n_ubatch(BATCH)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(ProviderError::Internal(format!(
                "creating a model context: {e}"
            ))));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(BATCH as usize, 1);
    // Ends when the provider (the sender side) is dropped.
    while let Ok(job) = jobs.recv() {
        let tx = job.tx.clone();
        if let Err(e) = generate(model, &mut ctx, &mut batch, cached, stats, job) {
            // What the context holds is unknown after a failed decode: start afresh.
            ctx.clear_kv_cache();
            cached.lock().clear();
            let _ = tx.blocking_send(Err(e));
        }
    }
}

type Tx = mpsc::Sender<Result<ModelEvent, ProviderError>>;

fn generate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    cached: &Mutex<Vec<LlamaToken>>,
    stats: &Counters,
    job: Job,
) -> Result<(), ProviderError> {
    let err =
        |what: &str, e: &dyn std::fmt::Display| ProviderError::Internal(format!("{what}: {e}"));
    let prompt = &job.prompt;
    let tx = &job.tx;
    // Reuse the cached prefix; at least the last prompt token is decoded again for logits.
    let mut cache = cached.lock();
    let keep = common_prefix(&cache, prompt).min(prompt.len().saturating_sub(1));
    if keep < cache.len() {
        let removed = ctx
            .clear_kv_cache_seq(Some(0), Some(keep as u32), None)
            .map_err(|e| err("trimming the cache", &e))?;
        if !removed {
            ctx.clear_kv_cache();
            cache.clear();
        }
    }
    let keep = keep.min(cache.len());
    cache.truncate(keep);
    stats.reused.fetch_add(keep as u64, Ordering::Relaxed);
    tracing::debug!(
        prompt = prompt.len(),
        cached = keep,
        "embedded model prefill"
    );
    let mut last_logits = 0;
    for chunk_start in (keep..prompt.len()).step_by(BATCH as usize) {
        if tx.is_closed() {
            return Ok(());
        }
        let chunk = &prompt[chunk_start..(chunk_start + BATCH as usize).min(prompt.len())];
        batch.clear();
        for (i, t) in chunk.iter().enumerate() {
            let pos = (chunk_start + i) as i32;
            let last = chunk_start + i + 1 == prompt.len();
            batch
                .add(*t, pos, &[0], last)
                .map_err(|e| err("batching the prompt", &e))?;
        }
        ctx.decode(batch).map_err(|e| err("prefill", &e))?;
        cache.extend_from_slice(chunk);
        stats
            .prefilled
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        last_logits = batch.n_tokens() - 1;
    }

    let mut sampler = match job.temperature {
        None => LlamaSampler::chain_simple([
            LlamaSampler::penalties(model.n_vocab(), 64, 1.1, 0.0, 0.0),
            LlamaSampler::greedy(),
        ]),
        Some(t) => LlamaSampler::chain_simple([
            LlamaSampler::penalties(model.n_vocab(), 64, 1.1, 0.0, 0.0),
            LlamaSampler::top_p(0.9, 1),
            LlamaSampler::temp(t),
            LlamaSampler::dist(uuid::Uuid::new_v4().as_u128() as u32),
        ]),
    };
    let vocab = model.vocab();
    let mut pending: Vec<u8> = Vec::new();
    let mut generated = 0usize;
    let mut finish = Finish::Length;
    while generated < job.max_tokens {
        let next = sampler.sample(ctx, last_logits);
        if vocab.is_eog(next) {
            finish = Finish::Stop;
            break;
        }
        generated += 1;
        vocab.token_to_piece_into(next, &mut pending, false, None);
        // Send the complete UTF-8 text, holding back a character split across tokens.
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => pending.len(),
        };
        if valid > 0 {
            let delta = String::from_utf8_lossy(&pending[..valid]).into_owned();
            pending.drain(..valid);
            if tx.blocking_send(Ok(ModelEvent::Delta(delta))).is_err() {
                return Ok(()); // the caller went away
            }
        } else if tx.is_closed() {
            return Ok(());
        }
        if generated == job.max_tokens {
            break;
        }
        batch.clear();
        batch
            .add(next, cache.len() as i32, &[0], true)
            .map_err(|e| err("batching a token", &e))?;
        ctx.decode(batch).map_err(|e| err("decoding", &e))?;
        cache.push(next);
        last_logits = 0;
    }
    if !pending.is_empty() {
        let _ = tx.blocking_send(Ok(ModelEvent::Delta(
            String::from_utf8_lossy(&pending).into_owned(),
        )));
    }
    drop(cache);
    let usage = Usage {
        prompt_tokens: prompt.len() as u32,
        completion_tokens: generated as u32,
        total_tokens: (prompt.len() + generated) as u32,
    };
    let _ = tx.blocking_send(Ok(ModelEvent::Finished(finish)));
    let _ = tx.blocking_send(Ok(ModelEvent::Usage(usage)));
    Ok(())
}

/// ChatML, as SmolLM2-Instruct was trained on (the text form of
/// [`EmbeddedProvider::prompt_tokens`], e.g. for a reference model given the same prompt).
pub fn chatml(request: &ModelRequest) -> String {
    let mut out = String::new();
    if request.messages.first().map(|m| m.role) != Some(Role::System) {
        out.push_str(&format!("<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"));
    }
    for m in &request.messages {
        out.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role.as_str(),
            m.joined_text()
        ));
    }
    out.push_str("<|im_start|>assistant\n");
    out
}

#[async_trait::async_trait]
impl ModelProvider for EmbeddedProvider {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn models(&self) -> Vec<ModelSpec> {
        vec![Self::spec()]
    }

    fn default_model(&self) -> String {
        MODEL_ID.into()
    }

    fn title_model(&self) -> Option<String> {
        // A 135M model names conversations worse than their first words do.
        None
    }

    async fn prepare(&self, _model: &str) -> Result<(), ProviderError> {
        self.load().await.map(|_| ())
    }

    fn count_tokens(&self, _model: &str, text: &str) -> u32 {
        match self.loaded.get() {
            Some(l) => l
                .model
                .vocab()
                .tokenize(text.as_bytes(), false, false)
                .len() as u32,
            None => crate::tokens::estimate(text),
        }
    }

    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ProviderError> {
        self.stream_as("", request).await
    }

    async fn stream_for(
        &self,
        user: &str,
        request: ModelRequest,
    ) -> Result<ModelStream, ProviderError> {
        self.stream_as(user, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::PromptMessage;

    #[test]
    fn chatml_adds_the_default_system_prompt() {
        let req = ModelRequest {
            model: MODEL_ID.into(),
            messages: vec![PromptMessage::text(Role::User, "Hi")],
            max_output_tokens: 8,
        };
        assert_eq!(
            chatml(&req),
            format!(
                "<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            )
        );
    }
}
