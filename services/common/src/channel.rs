//! One client type for every inter-service call, whether the service is remote (a URL
//! such as `CONFAB_CONVERSATION_URL`) or runs in this process. Both paths speak real
//! gRPC framing and metadata, so identity and trace context travel the same way.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;

use crate::config::ConfigError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxedChannel = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    BoxError,
>;

/// What generated clients are built on: `XClient::new(channel)`, remote or in-process.
///
/// A concrete type with a concrete error ([`ChannelError`]): generated clients over a
/// service whose error is `Box<dyn Error + Send + Sync>` trip rustc's higher-ranked
/// `Send` inference inside async code ("implementation of `From` is not general
/// enough"); with a named error type there is no trait-object lifetime to erase, so
/// `XClient<GrpcChannel>` calls work in spawned tasks and `Send` futures as they are.
#[derive(Clone)]
pub struct GrpcChannel(BoxedChannel);

impl GrpcChannel {
    /// Any cloneable HTTP/2 gRPC service as a channel.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = BoxError,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self(BoxCloneSyncService::new(service))
    }
}

impl std::fmt::Debug for GrpcChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcChannel")
    }
}

impl Service<http::Request<tonic::body::Body>> for GrpcChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = ChannelError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, ChannelError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        self.0.poll_ready(cx).map_err(ChannelError)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move { fut.await.map_err(ChannelError) })
    }
}

/// Why a [`GrpcChannel`] could not carry a call (connection refused, reset, ...).
/// Derefs to the underlying error.
#[derive(Debug)]
pub struct ChannelError(pub BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

impl std::ops::Deref for ChannelError {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

impl From<BoxError> for ChannelError {
    fn from(e: BoxError) -> Self {
        Self(e)
    }
}

/// Connections per remote service when `CONFAB_UPSTREAM_CONNECTIONS` is unset.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Connection-level HTTP/2 receive window of a remote channel (bytes).
///
/// h2 (0.4.20+) charges every received DATA frame smaller than 256 bytes against a
/// per-connection "small frame" budget of half this window until the application reads
/// it, and resets the whole connection with `ENHANCE_YOUR_CALM` when the budget runs
/// out. Token streams are exactly such frames (a 30–60 byte gRPC message each), so the
/// window bounds how far the reader may fall behind: 16 MiB allows ~38,000 unread
/// token frames per connection. Flow control still bounds buffered bytes by the same
/// window. Adaptive (BDP) windows are deliberately off: on loopback they shrink the
/// window, and with it the budget, to its 25,600-byte floor (~115 frames).
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Per-stream HTTP/2 receive window of a remote channel (bytes).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// How a remote channel connects.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// HTTP/2 connections to spread calls over (each call goes to the one with the
    /// fewest open calls). One connection serialises every stream of a service on one
    /// socket, one h2 connection lock and one frame budget.
    pub connections: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            connections: DEFAULT_CONNECTIONS,
        }
    }
}

impl RemoteOptions {
    /// `CONFAB_UPSTREAM_CONNECTIONS` (1..=64, default 4).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            connections: crate::config::env_parse_range(
                "CONFAB_UPSTREAM_CONNECTIONS",
                DEFAULT_CONNECTIONS,
                1,
                64,
            )?,
        })
    }
}

/// A lazily-connecting channel to a remote service: `CONFAB_UPSTREAM_CONNECTIONS` (4)
/// HTTP/2 connections, each call on the least busy one.
pub fn remote(variable: &str, url: &str) -> Result<GrpcChannel, ConfigError> {
    remote_with(variable, url, &RemoteOptions::from_env()?)
}

/// [`remote`] with explicit options.
pub fn remote_with(
    variable: &str,
    url: &str,
    options: &RemoteOptions,
) -> Result<GrpcChannel, ConfigError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::new(variable, format!("{url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .http2_adaptive_window(false)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let pool = Pool::new(
        (0..options.connections.max(1))
            .map(|_| endpoint.connect_lazy())
            .collect(),
    );
    Ok(GrpcChannel::new(
        ServiceBuilder::new()
            .layer(confab_telemetry::InjectContextLayer)
            .service(pool),
    ))
}

/// Several connections to one service; each call goes to the connection with the fewest
/// calls open (a call stays open until its response body ends or is dropped, so long
/// streams count), ties broken round-robin.
#[derive(Clone)]
struct Pool {
    members: Arc<[Member]>,
    next: Arc<AtomicUsize>,
}

struct Member {
    channel: tonic::transport::Channel,
    open: Arc<AtomicUsize>,
}

impl Pool {
    fn new(channels: Vec<tonic::transport::Channel>) -> Self {
        Self {
            members: channels
                .into_iter()
                .map(|channel| Member {
                    channel,
                    open: Arc::new(AtomicUsize::new(0)),
                })
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn pick(&self) -> &Member {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .min_by_key(|m| m.open.load(Ordering::Relaxed))
            .expect("a pool has at least one connection")
    }
}

/// Decrements its connection's open-call count when dropped.
struct OpenCall(Arc<AtomicUsize>);

impl OpenCall {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Service<http::Request<tonic::body::Body>> for Pool {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call waits for its own connection's readiness (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let member = self.pick();
        let call = OpenCall::new(&member.open);
        let channel = member.channel.clone();
        Box::pin(async move {
            let response = channel.oneshot(req).await.map_err(BoxError::from)?;
            Ok(response.map(|body| {
                tonic::body::Body::new(Tracked {
                    inner: body,
                    _call: call,
                })
            }))
        })
    }
}

/// A response body that keeps its call counted as open until it ends or is dropped.
struct Tracked<B> {
    inner: B,
    _call: OpenCall,
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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
    GrpcChannel::new(
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    /// A generated client over `GrpcChannel` is callable from a spawned (`Send`) task,
    /// in process and to a remote that is down (a typed error, not a panic).
    #[tokio::test]
    async fn generated_clients_work_in_send_contexts() {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let channel = in_process(health);
        assert!(ready(&channel).await);
        let mut client = HealthClient::new(channel);
        let status = tokio::spawn(async move {
            client
                .check(HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(status, ServingStatus::Serving as i32);

        let down = remote_with(
            "CONFAB_TEST_URL",
            "http://127.0.0.1:1",
            &RemoteOptions { connections: 1 },
        )
        .unwrap();
        let mut client = HealthClient::new(down);
        let err = tokio::spawn(async move { client.check(HealthCheckRequest::default()).await })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }
}
