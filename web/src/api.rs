//! Talking to the gateway: the session token and grpc-web clients.
//!
//! The session comes from `POST /auth/session`, lives in localStorage and is sent as
//! `authorization: Bearer …` on every call. An UNAUTHENTICATED answer gets a new session
//! and the call is retried once.

use std::cell::RefCell;
use std::future::Future;

use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::files::v1::file_service_client::FileServiceClient;
use confab_web_core::errors::{UiError, describe_status};
use serde::{Deserialize, Serialize};
use tonic::{Code, Request, Status};
use tonic_web_wasm_client::Client;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

const SESSION_KEY: &str = "confab.session";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub token: String,
    pub user_id: String,
    pub expires_at_ms: i64,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

pub fn origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string())
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn stored_session() -> Option<Session> {
    let raw = storage()?.get_item(SESSION_KEY).ok()??;
    serde_json::from_str(&raw).ok()
}

fn store_session(s: &Session) {
    if let (Some(st), Ok(raw)) = (storage(), serde_json::to_string(s)) {
        let _ = st.set_item(SESSION_KEY, &raw);
    }
}

fn js_err(v: JsValue) -> String {
    v.as_string()
        .or_else(|| {
            v.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| "network error".to_string())
}

/// `POST /auth/session`, refreshing `current` when given.
async fn fetch_session(current: Option<&str>) -> Result<Session, String> {
    let window = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let headers = web_sys::Headers::new().map_err(js_err)?;
    if let Some(t) = current {
        headers
            .set("authorization", &format!("Bearer {t}"))
            .map_err(js_err)?;
    }
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init("/auth/session", &init).map_err(js_err)?;
    let resp = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(js_err)?;
    let resp: web_sys::Response = resp.dyn_into().map_err(js_err)?;
    if !resp.ok() {
        return Err(format!(
            "could not start a session (HTTP {})",
            resp.status()
        ));
    }
    let text = JsFuture::from(resp.text().map_err(js_err)?)
        .await
        .map_err(js_err)?;
    let text = text.as_string().unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| format!("bad session answer: {e}"))
}

/// A valid session: memory, then localStorage, then a new (or refreshed) one.
pub async fn ensure_session(force_new: bool) -> Result<Session, String> {
    let now = now_ms();
    if !force_new {
        let cached = SESSION.with(|s| s.borrow().clone()).or_else(stored_session);
        if let Some(s) = cached {
            if s.expires_at_ms > now + 5 * 60_000 {
                SESSION.with(|c| *c.borrow_mut() = Some(s.clone()));
                return Ok(s);
            }
            if s.expires_at_ms > now {
                // About to expire: refresh as the same user.
                if let Ok(fresh) = fetch_session(Some(&s.token)).await {
                    store_session(&fresh);
                    SESSION.with(|c| *c.borrow_mut() = Some(fresh.clone()));
                    return Ok(fresh);
                }
            }
        }
    }
    let fresh = fetch_session(None).await?;
    store_session(&fresh);
    SESSION.with(|c| *c.borrow_mut() = Some(fresh.clone()));
    Ok(fresh)
}

pub fn chat() -> ChatServiceClient<Client> {
    ChatServiceClient::new(Client::new(origin()))
}

pub fn conversations() -> ConversationServiceClient<Client> {
    ConversationServiceClient::new(Client::new(origin()))
}

pub fn files() -> FileServiceClient<Client> {
    FileServiceClient::new(Client::new(origin()))
}

/// A request carrying the session's bearer token.
pub fn req<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// Runs `f(token)`; on UNAUTHENTICATED gets a new session and runs it once more.
pub async fn call<T, F, Fut>(f: F) -> Result<T, Status>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let s = ensure_session(false).await.map_err(Status::unavailable)?;
    match f(s.token).await {
        Err(st) if st.code() == Code::Unauthenticated => {
            let s = ensure_session(true).await.map_err(Status::unavailable)?;
            f(s.token).await
        }
        other => other,
    }
}

/// A status as the UI shows it.
pub fn ui_error(st: &Status) -> UiError {
    let retry_after = st
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    describe_status(st.code() as i32, st.message(), retry_after)
}

/// Resolves after `ms` milliseconds (setTimeout).
pub async fn sleep_ms(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(p).await;
}

/// Copies text through the helper in index.html (navigator.clipboard with a fallback).
pub fn copy_text(text: &str) {
    if let Some(w) = web_sys::window()
        && let Ok(f) = js_sys::Reflect::get(&w, &JsValue::from_str("confabCopy"))
        && let Some(f) = f.dyn_ref::<js_sys::Function>()
    {
        let _ = f.call1(&JsValue::NULL, &JsValue::from_str(text));
    }
}

/// An object URL for bytes (image previews and thumbnails).
pub fn object_url(bytes: &[u8], mime: &str) -> Option<String> {
    let arr = js_sys::Uint8Array::from(bytes);
    let parts = js_sys::Array::new();
    parts.push(&arr.buffer());
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts).ok()?;
    web_sys::Url::create_object_url_with_blob(&blob).ok()
}

pub fn set_hash(h: &str) {
    if let Some(w) = web_sys::window()
        && let Ok(hist) = w.history()
    {
        let url = if h.is_empty() {
            w.location().pathname().unwrap_or_else(|_| "/".into())
        } else {
            format!("#{h}")
        };
        let _ = hist.replace_state_with_url(&JsValue::NULL, "", Some(&url));
    }
}

pub fn get_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .map(|h| h.trim_start_matches('#').to_string())
        .unwrap_or_default()
}

pub fn element(id: &str) -> Option<web_sys::Element> {
    web_sys::window()?.document()?.get_element_by_id(id)
}
