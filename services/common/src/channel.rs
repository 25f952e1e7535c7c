//! One client type for every inter-service call, whether the service is remote (a URL
//! such as `CONFAB_CONVERSATION_URL`) or runs in this process. Both paths speak real
//! gRPC framing and metadata, so identity and trace context travel the same way.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;

use crate::config::ConfigError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What generated clients are built on: `XClient::new(channel)`.
pub type GrpcChannel = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    BoxError,
>;

/// A lazily-connecting channel to a remote service.
pub fn remote(variable: &str, url: &str) -> Result<GrpcChannel, ConfigError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::new(variable, format!("{url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect_lazy();
    Ok(BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(confab_telemetry::InjectContextLayer)
            .map_err(BoxError::from)
            .service(channel),
    ))
}

/// A channel to a service running in this process (a generated `XServer`).
pub fn in_process<S>(server: S) -> GrpcChannel
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(confab_telemetry::InjectContextLayer)
            .service(Spanned(server))
            .map_err(|e: Infallible| -> BoxError { match e {} }),
    )
}

/// Gives in-process calls the same server span a network call gets from `trace_fn`.
#[derive(Clone)]
struct Spanned<S>(S);

impl<S, B> Service<http::Request<B>> for Spanned<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = confab_telemetry::grpc_server_span(&req);
        let fut = self.0.call(req);
        Box::pin(fut.instrument(span))
    }
}

/// Remote when `url` is set, otherwise the in-process server `make_local` builds.
pub fn remote_or_local<F, S>(
    variable: &str,
    url: Option<&str>,
    make_local: F,
) -> Result<GrpcChannel, ConfigError>
where
    F: FnOnce() -> Result<S, ConfigError>,
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    match url {
        Some(url) => remote(variable, url),
        None => Ok(in_process(make_local()?)),
    }
}

/// Readiness of a channel without sending a request (used by health pages).
pub async fn ready(channel: &GrpcChannel) -> bool {
    channel.clone().ready().await.is_ok()
}
