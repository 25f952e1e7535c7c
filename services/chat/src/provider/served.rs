//! The models an OpenAI-compatible server (llama.cpp, Ollama, vLLM) serves, from its
//! `/v1/models`: fetched at start and refreshed in the background, so ListModels offers
//! what the upstream can answer with instead of OpenAI's model names. Never while an
//! answer streams: llama.cpp's Python server cuts a running answer off when any other
//! request arrives, the model list included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::RwLock;
use serde::Deserialize;

use super::ProviderError;

/// How often the list is fetched again (a local server may load another model).
pub const REFRESH: Duration = Duration::from_secs(60);
/// A model list is small; anything bigger is not one.
const MAX_BODY: usize = 1 << 20;

/// The last list fetched; `None` until one arrived.
#[derive(Debug, Default)]
pub struct ServedModels {
    ids: RwLock<Option<Vec<String>>>,
}

impl ServedModels {
    pub fn ids(&self) -> Option<Vec<String>> {
        self.ids.read().clone()
    }

    pub fn set(&self, ids: Vec<String>) {
        *self.ids.write() = Some(ids);
    }
}

/// One answer in flight, counted in the provider's busy counter while it lives.
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    pub fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize)]
struct List {
    data: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: String,
}

/// `GET {base_url}/models` → the model ids, in the server's order.
pub async fn fetch(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    timeout: Duration,
) -> Result<Vec<String>, ProviderError> {
    let url = format!("{base_url}/models");
    let request = async {
        let response = http
            .get(&url)
            .bearer_auth(api_key)
            .send()
            .await
            .map_err(|e| {
                ProviderError::Unavailable(format!(
                    "cannot list the upstream's models: {}",
                    confab_common::error::cause_chain(&e)
                ))
            })?;
        let status = response.status();
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| ProviderError::Unavailable(e.to_string()))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ProviderError::Upstream(format!(
                    "{url} sent more than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(super::openai::http_error(
                status.as_u16(),
                None,
                &String::from_utf8_lossy(&body),
            ));
        }
        let list: List = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Upstream(format!("{url}: not a model list ({e})")))?;
        Ok(list.data.into_iter().map(|e| e.id).collect())
    };
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| ProviderError::Timeout(format!("{url} did not answer in time")))?
}

/// Keeps `served` current while it lives (the task ends with its provider). Without a
/// Tokio runtime (a provider built outside one) nothing is fetched and the configured
/// model is listed.
pub fn spawn_refresh(
    served: &Arc<ServedModels>,
    busy: Arc<AtomicUsize>,
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    timeout: Duration,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<ServedModels> = Arc::downgrade(served);
    rt.spawn(async move {
        loop {
            if busy.load(Ordering::SeqCst) > 0 {
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let result = fetch(&http, &base_url, &api_key, timeout).await;
            let Some(served) = weak.upgrade() else { return };
            match result {
                Ok(ids) => served.set(ids),
                Err(e) => tracing::warn!(error = %e, "could not refresh the upstream's models"),
            }
            // Until a first list arrives (the server may still be starting), ask again soon.
            let wait = if served.ids().is_some() {
                REFRESH
            } else {
                Duration::from_secs(2)
            };
            drop(served);
            tokio::time::sleep(wait).await;
        }
    });
}
