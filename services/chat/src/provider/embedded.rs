//! The embedded model: SmolLM2-135M-Instruct (GGUF, Q4_1) on CPU with candle. The weights
//! load once (lazily) and each generation decodes on a blocking thread with its own
//! KV cache, sending text through a bounded channel; when the receiver is dropped the
//! thread stops before the next token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::Tokenizer;
use tokio::sync::{OnceCell, mpsc};

use super::{
    Finish, ModelEvent, ModelProvider, ModelRequest, ModelSpec, ModelStream, ProviderError, Role,
    Usage,
};

pub const MODEL_ID: &str = "smollm2-135m-instruct";
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const CONTEXT_WINDOW: u32 = 8192;
const MAX_OUTPUT: u32 = 512;
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
/// Prompt tokens processed per forward pass (cancellation is checked between chunks).
const PREFILL_CHUNK: usize = 256;

struct Loaded {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    stop_tokens: Vec<u32>,
}

pub struct EmbeddedProvider {
    path: PathBuf,
    loaded: OnceCell<Arc<Loaded>>,
    /// Sampling temperature; `None` is greedy (deterministic, used by tests).
    temperature: Option<f64>,
}

impl EmbeddedProvider {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            loaded: OnceCell::new(),
            temperature: Some(0.7),
        }
    }

    pub fn greedy(mut self) -> Self {
        self.temperature = None;
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
                tokio::task::spawn_blocking(move || load(&path))
                    .await
                    .map_err(|e| ProviderError::Internal(format!("model loader panicked: {e}")))?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }
}

fn load(path: &Path) -> Result<Loaded, ProviderError> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        ProviderError::Unavailable(format!(
            "the embedded model file {} cannot be opened ({e}); run scripts/fetch-model.sh or set CONFAB_MODEL_PATH",
            path.display()
        ))
    })?;
    let bad =
        |e: candle_core::Error| ProviderError::Internal(format!("loading {}: {e}", path.display()));
    let content = gguf_file::Content::read(&mut file).map_err(bad)?;
    let tokenizer = Tokenizer::from_gguf(&content).map_err(bad)?;
    let weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).map_err(bad)?;
    let stop_tokens = ["<|im_end|>", "<|endoftext|>"]
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    Ok(Loaded {
        weights,
        tokenizer,
        stop_tokens,
    })
}

/// ChatML, as SmolLM2-Instruct was trained on.
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
                .tokenizer
                .encode(text, false)
                .map(|e| e.len() as u32)
                .unwrap_or_else(|_| crate::tokens::estimate(text)),
            None => crate::tokens::estimate(text),
        }
    }

    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ProviderError> {
        let loaded = self.load().await?;
        let prompt = chatml(&request);
        let max_tokens = request.max_output_tokens.clamp(1, MAX_OUTPUT) as usize;
        let temperature = self.temperature;
        let (tx, rx) = mpsc::channel(32);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = decode(&loaded, &prompt, max_tokens, temperature, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

type Tx = mpsc::Sender<Result<ModelEvent, ProviderError>>;

fn decode(
    loaded: &Loaded,
    prompt: &str,
    max_tokens: usize,
    temperature: Option<f64>,
    tx: &Tx,
) -> Result<(), ProviderError> {
    let err = |e: candle_core::Error| ProviderError::Internal(format!("decoding: {e}"));
    let prompt_ids = loaded
        .tokenizer
        .encode(prompt, false)
        .map_err(|e| ProviderError::Internal(format!("tokenizing: {e}")))?
        .get_ids()
        .to_vec();
    if prompt_ids.len() + max_tokens > CONTEXT_WINDOW as usize {
        return Err(ProviderError::ContextTooLarge(format!(
            "{} prompt tokens + {max_tokens} for the answer exceed the window of {CONTEXT_WINDOW}",
            prompt_ids.len()
        )));
    }
    let mut model = loaded.weights.clone();
    let sampling = match temperature {
        None => Sampling::ArgMax,
        Some(t) => Sampling::TopP {
            p: 0.9,
            temperature: t,
        },
    };
    let mut sampler = LogitsProcessor::from_sampling(0x5eed, sampling);
    let device = Device::Cpu;

    let mut logits = None;
    for (i, chunk) in prompt_ids.chunks(PREFILL_CHUNK).enumerate() {
        if tx.is_closed() {
            return Ok(());
        }
        let input = Tensor::new(chunk, &device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(err)?;
        logits = Some(model.forward(&input, i * PREFILL_CHUNK).map_err(err)?);
    }
    let mut logits = logits.ok_or_else(|| ProviderError::Internal("empty prompt".into()))?;

    let mut generated: Vec<u32> = Vec::new();
    let mut emitted = String::new();
    let mut finish = Finish::Length;
    for step in 0..max_tokens {
        let l = logits.squeeze(0).map_err(err)?;
        let start = generated.len().saturating_sub(64);
        let l = candle_transformers::utils::apply_repeat_penalty(&l, 1.1, &generated[start..])
            .map_err(err)?;
        let next = sampler.sample(&l).map_err(err)?;
        if loaded.stop_tokens.contains(&next) {
            finish = Finish::Stop;
            break;
        }
        generated.push(next);
        // Decode the whole answer and send what is new, holding back a partial UTF-8 tail.
        let text = loaded
            .tokenizer
            .decode(&generated, true)
            .map_err(|e| ProviderError::Internal(format!("detokenizing: {e}")))?;
        if text.len() > emitted.len() && !text.ends_with('\u{FFFD}') && text.starts_with(&emitted) {
            let delta = text[emitted.len()..].to_owned();
            emitted = text;
            if tx.blocking_send(Ok(ModelEvent::Delta(delta))).is_err() {
                return Ok(()); // the caller went away
            }
        } else if tx.is_closed() {
            return Ok(());
        }
        let input = Tensor::new(&[next], &device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(err)?;
        logits = model
            .forward(&input, prompt_ids.len() + step)
            .map_err(err)?;
    }
    let usage = Usage {
        prompt_tokens: prompt_ids.len() as u32,
        completion_tokens: generated.len() as u32,
        total_tokens: (prompt_ids.len() + generated.len()) as u32,
    };
    let _ = tx.blocking_send(Ok(ModelEvent::Finished(finish)));
    let _ = tx.blocking_send(Ok(ModelEvent::Usage(usage)));
    Ok(())
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
