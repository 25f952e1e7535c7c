//! Plain HTTP on the gateway's port: `POST /auth/session`, `GET /health`,
//! `GET /metrics`, and the web client's static files (index.html for unknown paths).

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{AuthError, Authenticator};
use crate::health::HealthState;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub auth: Arc<Authenticator>,
    pub health: Arc<HealthState>,
    pub metrics: Arc<Metrics>,
    pub allow_anonymous: bool,
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
}

/// A new anonymous session, or the caller's session renewed when it sends a valid
/// bearer token. `{"token", "user_id", "expires_at_ms"}`.
async fn session(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let current = match Authenticator::bearer(&headers) {
        Ok(Some(token)) => s.auth.verify(token).await.ok(),
        Ok(None) | Err(_) => None,
    };
    let issued = match current {
        // An OIDC session never outlives its token.
        Some(p) if p.anonymous => s.auth.sessions.issue(&p.user_id, true, None),
        Some(p) => s
            .auth
            .sessions
            .issue(&p.user_id, false, Some(p.expires_at_ms)),
        None if s.allow_anonymous => s.auth.sessions.issue_anonymous(),
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

async fn metrics(State(s): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
