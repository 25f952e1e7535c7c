//! The gRPC server every service binary runs: its own services plus `grpc.health.v1`
//! and reflection (v1 and v1alpha, since grpcurl here speaks only v1alpha), with a
//! graceful drain: health goes NOT_SERVING, new connections stop, in-flight calls get
//! up to the grace period to finish.

use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Health for `names` and the overall server (""), plus reflection over every Confab
/// proto and the health proto.
pub async fn health_and_reflection(
    routes: Routes,
    names: &[&'static str],
) -> Result<(Routes, HealthReporter), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in names.iter().copied().chain([""]) {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(confab_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(confab_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = routes
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((routes, reporter))
}

/// Marks every name NOT_SERVING (start of a drain).
pub async fn set_not_serving(reporter: &HealthReporter, names: &[&'static str]) {
    for name in names.iter().copied().chain([""]) {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

/// Concurrent HTTP/2 streams per connection. Callers are the gateway and other services
/// (a few pooled connections each, see [`crate::channel::remote`]), each of which may
/// carry thousands of long chat streams; beyond this a caller's new streams queue.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16_384;

/// Streams a caller may reset before this server has accepted them. h2's default (20)
/// is a rapid-reset guard for the open internet; here the caller is the gateway, which
/// legitimately cancels many upstream streams at once when browsers go away, and
/// exceeding the limit resets the whole connection (`ENHANCE_YOUR_CALM`).
pub const MAX_PENDING_ACCEPT_RESETS: usize = 4096;

/// A service binary's gRPC server.
pub struct GrpcServer {
    routes: Routes,
    names: Vec<&'static str>,
    reporter: HealthReporter,
}

impl GrpcServer {
    /// `names`: the fully-qualified services in `routes`, reported in health.
    pub async fn new(routes: Routes, names: &[&'static str]) -> Result<Self, ServeError> {
        let (routes, reporter) = health_and_reflection(routes, names).await?;
        Ok(Self {
            routes,
            names: names.to_vec(),
            reporter,
        })
    }

    /// For services whose health depends on a backend (e.g. Redis degraded).
    pub fn health_reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Serves until `shutdown`, then drains for at most `grace`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
        grace: Duration,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr().ok();
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            conn.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        let reporter = self.reporter.clone();
        let names = self.names.clone();
        let (drain_started_tx, drain_started) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.wait().await;
            set_not_serving(&reporter, &names).await;
            let _ = drain_started_tx.send(());
        };
        let server = Server::builder()
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
            .http2_adaptive_window(Some(false))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .trace_fn(confab_telemetry::grpc_server_span)
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);
        tracing::info!(addr = ?addr, services = ?self.names, "serving gRPC");
        tokio::select! {
            result = &mut server => result?,
            _ = drain_started => {
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result?,
                    Err(_) => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining calls"),
                }
            }
        }
        tracing::info!("server stopped");
        Ok(())
    }
}

/// Probes `addr`'s overall gRPC health; true when SERVING. Used by `--health-check`
/// (container HEALTHCHECK) and tests.
pub async fn probe_health(addr: std::net::SocketAddr, service: &str) -> bool {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let url = format!("http://{addr}");
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}
