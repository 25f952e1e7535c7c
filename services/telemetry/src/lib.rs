//! Tracing for every Confab binary: JSON (or pretty) logs, optional OpenTelemetry OTLP
//! export, and W3C trace-context propagation across gRPC calls.
//!
//! Must never depend on any Confab crate: everything else depends on it.
#![forbid(unsafe_code)]

pub mod metrics_names;

use std::io::IsTerminal;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporter alive; flushes spans when dropped at the end of `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Log format: `LOG_FORMAT=json|pretty`; JSON when stderr is not a terminal (ECS, CI).
fn json_logs() -> bool {
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("pretty") => false,
        _ => !std::io::stderr().is_terminal(),
    }
}

/// Installs the global subscriber. OTLP export is on when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set (the exporter reads the standard `OTEL_*` variables itself).
pub fn init(service_name: &'static str) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
    ]));

    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_owned()),
        )
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let mut export_error = None;
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => export_error = Some(e.to_string()),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if json_logs() {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    // try_init: tests may install a subscriber more than once per process.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(e) = export_error {
        tracing::warn!(error = %e, "OTLP exporter could not be built; traces are not exported");
    }
    TelemetryGuard { provider }
}

/// Writes the current span's trace context into outgoing request headers.
pub fn inject_context(headers: &mut http::HeaderMap) {
    let cx = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// Reads a caller's trace context from incoming request headers.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// The server span of one gRPC call, a child of the caller's trace when it sent one.
pub fn grpc_server_span<B>(request: &http::Request<B>) -> Span {
    let path = request.uri().path();
    let (service, method) = split_grpc_path(path);
    let span = tracing::info_span!(
        "grpc",
        otel.kind = "server",
        otel.name = %path,
        rpc.service = %service,
        rpc.method = %method,
        user = tracing::field::Empty,
    );
    let _ = span.set_parent(extract_context(request.headers()));
    span
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
pub fn split_grpc_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// A tower layer for outgoing gRPC requests that injects the trace context.
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectContextLayer;

impl<S> tower::Layer<S> for InjectContextLayer {
    type Service = InjectContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InjectContext { inner }
    }
}

#[derive(Clone, Debug)]
pub struct InjectContext<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for InjectContext<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        inject_context(req.headers_mut());
        self.inner.call(req)
    }
}

/// Binds `addr` and serves `GET /metrics` (Prometheus text from `encode`) in a background
/// task: the `CONFAB_METRICS_ADDR` port of the non-gateway services.
/// Prometheus text of the metrics `register` adds to a fresh registry (a service's own
/// /metrics, or its part of the gateway's).
pub fn encode_metrics(register: impl FnOnce(&mut prometheus_client::registry::Registry)) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    register(&mut registry);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

pub async fn spawn_metrics_server<F>(
    addr: std::net::SocketAddr,
    encode: F,
) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let encode = encode.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    encode(),
                )
            }
        }),
    );
    tracing::info!(%addr, "serving /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            split_grpc_path("/confab.chat.v1.ChatService/SendMessage"),
            ("confab.chat.v1.ChatService", "SendMessage")
        );
        assert_eq!(split_grpc_path("/health"), ("health", ""));
    }

    #[test]
    fn context_round_trips_through_headers() {
        let _guard = init("telemetry-test");
        let span = tracing::info_span!("outer");
        let _e = span.enter();
        let mut headers = http::HeaderMap::new();
        inject_context(&mut headers);
        let traceparent = headers
            .get("traceparent")
            .expect("traceparent injected")
            .to_str()
            .unwrap()
            .to_owned();
        let cx = extract_context(&headers);
        use opentelemetry::trace::TraceContextExt;
        let remote = cx.span().span_context().clone();
        assert!(remote.is_valid());
        assert!(traceparent.contains(&remote.trace_id().to_string()));
        assert_eq!(
            span.context().span().span_context().trace_id(),
            remote.trace_id()
        );
    }
}
