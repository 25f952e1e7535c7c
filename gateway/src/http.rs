//! Plain HTTP on the gateway's port: `POST /auth/session`, `GET /health`,
//! `GET /metrics` (with `CONFAB_METRICS_TOKEN` only), and the web client's static files
//! (index.html for unknown paths), every response with the security headers.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use confab_proto::ratelimit::v1::RequestClass;
use serde_json::json;
use sha2::Digest;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{AuthError, Authenticator, client_addr};
use crate::budget::{BudgetError, Budgets};
use crate::health::HealthState;
use crate::metrics::Metrics;
use crate::proxy::PeerAddr;

#[derive(Clone)]
pub struct HttpState {
    pub auth: Arc<Authenticator>,
    pub health: Arc<HealthState>,
    pub metrics: Arc<Metrics>,
    pub allow_anonymous: bool,
    pub budgets: Budgets,
    pub trusted_proxy_hops: usize,
    pub metrics_token: Option<String>,
}

/// The Content-Security-Policy the web client runs under: its own origin only, wasm
/// compiled by the browser (`'wasm-unsafe-eval'`, not `'unsafe-eval'`), the inline
/// scripts of `index.html` by hash, no framing, no plugins. Styles may be inline
/// because the UI sets `style` attributes; thumbnails are `data:` URLs.
pub fn content_security_policy(web_dir: &Path) -> String {
    let hashes: String = std::fs::read_to_string(web_dir.join("index.html"))
        .map(|html| {
            inline_scripts(&html)
                .map(|body| {
                    let digest = sha2::Sha256::digest(body.as_bytes());
                    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
                    format!(" 'sha256-{b64}'")
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self'; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// The bodies of `<script>` elements without `src` (what a CSP hash covers).
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let (attrs, after) = rest.split_once('>')?;
        if attrs.contains("src=") {
            return None;
        }
        Some(after.split_once("</script>")?.0)
    })
}

/// The label a plain-HTTP path is counted under (bounded cardinality).
pub fn path_label(path: &str) -> &'static str {
    match path {
        "/auth/session" => "/auth/session",
        "/health" => "/health",
        "/metrics" => "/metrics",
        _ => "static",
    }
}

pub fn router(state: HttpState, web_dir: &Path) -> axum::Router {
    let csp = HeaderValue::from_str(&content_security_policy(web_dir))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    let index = web_dir.join("index.html");
    let files = ServeDir::new(web_dir)
        .precompressed_gzip()
        .fallback(ServeFile::new(index).precompressed_gzip());
    let static_files = tower::ServiceBuilder::new()
        .layer(CompressionLayer::new().gzip(true))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        ))
        .service(files);
    axum::Router::new()
        .route("/auth/session", post(session))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback_service(static_files)
        .with_state(state)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

fn too_many(e: &BudgetError) -> Response {
    match e {
        BudgetError::Exhausted {
            message,
            retry_after,
        } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(json!({ "error": message, "retry_after_seconds": secs })),
            )
                .into_response()
        }
        BudgetError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// A new anonymous session, or the caller's session renewed when it sends a valid
/// bearer token. `{"token", "user_id", "expires_at_ms"}`. New anonymous sessions count
/// against the client address's budget (429 with Retry-After when spent); a renewal
/// never reaches past the session's maximum lifetime.
async fn session(State(s): State<HttpState>, req: Request) -> Response {
    let headers: &HeaderMap = req.headers();
    let current = match Authenticator::bearer(headers) {
        Ok(Some(token)) => s.auth.verify(token).await.ok(),
        Ok(None) | Err(_) => None,
    };
    let issued = match current {
        Some(p) => s.auth.sessions.renew(&p),
        None if s.allow_anonymous => {
            let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
            let subject = match client_addr(peer, headers, s.trusted_proxy_hops) {
                Some(addr) => confab_common::identity::address_subject(addr),
                // No address at all (not over TCP): one shared budget.
                None => "ip:unknown".to_owned(),
            };
            if let Err(e) = s.budgets.admit(&subject, RequestClass::Session).await {
                tracing::info!(subject = %subject, error = %e, "anonymous session refused");
                return too_many(&e);
            }
            s.auth.sessions.issue_anonymous()
        }
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": AuthError::Missing.to_string() })),
            )
                .into_response();
        }
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(issued)).into_response()
}

async fn health(State(s): State<HttpState>) -> Response {
    let (ok, body) = s.health.check().await;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Only with `CONFAB_METRICS_TOKEN` and its bearer token; otherwise 404, as if absent
/// (metrics live on `CONFAB_METRICS_ADDR`, off the public port).
async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let authorized = match (&s.metrics_token, Authenticator::bearer(&headers)) {
        (Some(want), Ok(Some(got))) => constant_time_eq(want.as_bytes(), got.as_bytes()),
        _ => false,
    };
    if !authorized {
        return StatusCode::NOT_FOUND.into_response();
    }
    metrics_response(&s.metrics)
}

pub fn metrics_response(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_hashes_exactly_the_inline_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            "<script>a()</script><script type=\"module\">b()</script><script src=\"x.js\"></script>",
        )
        .unwrap();
        let csp = content_security_policy(dir.path());
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s.as_bytes()))
        };
        assert!(csp.contains(&format!("'sha256-{}'", hash("a()"))), "{csp}");
        assert!(csp.contains(&format!("'sha256-{}'", hash("b()"))), "{csp}");
        assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
        assert!(csp.contains("'wasm-unsafe-eval'") && !csp.contains("'unsafe-eval'"));
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}
