//! The listener: HTTP/1.1 and h2c on one port (hyper-util's auto builder), grpc-web
//! translation (tonic-web), CORS, connection limits (in all and per client address),
//! slowloris and idle timeouts, HTTP/2 keepalive, and a graceful drain (health
//! NOT_SERVING first, then in-flight calls get the grace period).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body as AxumBody;
use confab_common::Shutdown;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::Gateway;
use crate::budget::Budgets;
use crate::config::{CorsOrigins, Limits};
use crate::health::HealthState;
use crate::http::{HttpState, path_label, router};
use crate::proxy::{CloseConnection, GrpcWeb, PUBLIC_SERVICES, PeerAddr, Proxy};

fn cors_layer(origins: &CorsOrigins) -> anyhow::Result<Option<CorsLayer>> {
    let base = || {
        CorsLayer::new()
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
                HeaderName::from_static("retry-after"),
            ])
            .max_age(Duration::from_secs(2 * 3600))
    };
    Ok(match origins {
        CorsOrigins::SameOrigin => None,
        CorsOrigins::Any => Some(base().allow_origin(tower_http::cors::Any)),
        CorsOrigins::List(list) => {
            let values = list
                .iter()
                .map(|o| HeaderValue::from_str(o))
                .collect::<Result<Vec<_>, _>>()?;
            Some(
                base()
                    .allow_origin(AllowOrigin::list(values))
                    .allow_credentials(true),
            )
        }
    })
}

fn is_grpc(req: &Request<Incoming>) -> (bool, bool) {
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (
        ct.starts_with("application/grpc"),
        ct.starts_with("application/grpc-web"),
    )
}

type EdgeService = BoxCloneSyncService<Request<Incoming>, Response<AxumBody>, Infallible>;

async fn build_service(
    gateway: &Gateway,
    health: Arc<HealthState>,
) -> anyhow::Result<(EdgeService, tonic_health::server::HealthReporter)> {
    let (local, reporter) =
        confab_common::server::health_and_reflection(Routes::default(), PUBLIC_SERVICES).await?;
    let budgets = Budgets::new(
        gateway.upstreams.ratelimit.channel.clone(),
        gateway.edge.ratelimit_fail_closed,
    );
    let proxy = Proxy::new(
        gateway.channels(),
        BoxCloneSyncService::new(local),
        gateway.auth.clone(),
        gateway.metrics.clone(),
        gateway.edge.limits.clone(),
        gateway.edge.trusted_proxy_hops,
        budgets.clone(),
    );
    let grpc = tonic_web::GrpcWebLayer::new().layer(proxy);
    let http = router(
        HttpState {
            auth: gateway.auth.clone(),
            health,
            metrics: gateway.metrics.clone(),
            allow_anonymous: gateway.edge.allow_anonymous,
            budgets,
            trusted_proxy_hops: gateway.edge.trusted_proxy_hops,
            metrics_token: gateway.edge.metrics_token.clone(),
        },
        &gateway.edge.web_dir,
    );
    let metrics = gateway.metrics.clone();
    let dispatch = tower::service_fn(move |mut req: Request<Incoming>| {
        let grpc = grpc.clone();
        let http = http.clone();
        let metrics = metrics.clone();
        async move {
            let (grpc_any, grpc_web) = is_grpc(&req);
            if grpc_any {
                if grpc_web {
                    req.extensions_mut().insert(GrpcWeb);
                }
                let resp = grpc.oneshot(req).await?;
                Ok::<_, Infallible>(resp.map(AxumBody::new))
            } else {
                let label = path_label(req.uri().path());
                let resp = http.oneshot(req.map(AxumBody::new)).await?;
                metrics.http(label, resp.status().as_u16());
                Ok(resp)
            }
        }
    });
    let service = tower::ServiceBuilder::new()
        .option_layer(cors_layer(&gateway.edge.cors)?)
        .service(dispatch);
    Ok((BoxCloneSyncService::new(service), reporter))
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(100)
        // What one stream may have waiting for a client's window (bounded per stream).
        .max_send_buf_size(64 * 1024)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
}

/// Open connections per client address (IPv6 per /64).
#[derive(Default)]
struct PerAddress(parking_lot::Mutex<HashMap<String, usize>>);

struct AddressSlot {
    table: Arc<PerAddress>,
    key: String,
}

impl PerAddress {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = confab_common::identity::address_subject(ip);
        let mut map = self.0.lock();
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Requests in flight on one connection and when the last one ended, for the idle timeout.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
    fn idle_longer_than(&self, d: Duration) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        self.in_flight.load(Ordering::Acquire) == 0
            && now.saturating_sub(self.last_ms.load(Ordering::Acquire)) >= d.as_millis() as u64
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms
            .store(a.start.elapsed().as_millis() as u64, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: Shutdown,
    grace: Duration,
) -> anyhow::Result<()> {
    let u = &gateway.upstreams;
    let health = Arc::new(HealthState::new(
        vec![
            u.chat.clone(),
            u.conversation.clone(),
            u.files.clone(),
            u.ratelimit.clone(),
        ],
        gateway.edge.redis_url.clone(),
        gateway.edge.ratelimit_fail_closed,
        shutdown.clone(),
    ));
    let (service, reporter) = build_service(&gateway, health).await?;
    let metrics_server = match gateway.edge.metrics_addr {
        Some(addr) => {
            let metrics = gateway.metrics.clone();
            Some(
                confab_telemetry::spawn_metrics_server(addr, move || metrics.render())
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot listen on CONFAB_METRICS_ADDR {addr}: {e}")
                    })?,
            )
        }
        None => None,
    };
    let per_address = Arc::new(PerAddress::default());
    // Behind trusted proxies every TCP peer is a proxy: they cap clients themselves.
    let cap_addresses = gateway.edge.trusted_proxy_hops == 0;
    let limits = gateway.edge.limits.clone();
    let builder = Arc::new(http_builder(&limits));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let addr = listener.local_addr().ok();
    tracing::info!(
        addr = ?addr,
        web_dir = %gateway.edge.web_dir.display(),
        chat = gateway.upstreams.chat.url.as_deref().unwrap_or("in-process"),
        conversation = gateway.upstreams.conversation.url.as_deref().unwrap_or("in-process"),
        files = gateway.upstreams.files.url.as_deref().unwrap_or("in-process"),
        ratelimit = gateway.upstreams.ratelimit.url.as_deref().unwrap_or("in-process"),
        "gateway serving grpc-web, gRPC and HTTP"
    );
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let slot = if cap_addresses {
            match per_address.try_take(peer.ip(), limits.max_connections_per_addr) {
                Some(slot) => Some(slot),
                None => {
                    tracing::warn!(
                        peer = %peer,
                        limit = limits.max_connections_per_addr,
                        "per-address connection limit reached; refusing"
                    );
                    drop(stream);
                    continue;
                }
            }
        } else {
            None
        };
        let _ = stream.set_nodelay(true);
        let seen_request = Arc::new(AtomicBool::new(false));
        let activity = Activity::new();
        let close = CloseConnection(Arc::new(tokio::sync::Notify::new()));
        let svc = service.clone();
        let seen = seen_request.clone();
        let (act, close_ext) = (activity.clone(), close.clone());
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(PeerAddr(peer));
            req.extensions_mut().insert(close_ext.clone());
            let in_flight = act.begin();
            let call = svc.clone().oneshot(req);
            async move {
                let resp = call.await?;
                // Counted in flight until the response body is done (or dropped).
                Ok::<_, Infallible>(resp.map(|b| {
                    AxumBody::new(http_body_util::BodyExt::map_frame(b, move |f| {
                        let _held = &in_flight;
                        f
                    }))
                }))
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), hyper_svc)
            .into_owned();
        let conn = graceful.watch(conn);
        let first_request_timeout = limits.header_read_timeout;
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            let first = tokio::time::sleep(first_request_timeout);
            tokio::pin!(first);
            let mut first_checked = false;
            let mut tick = tokio::time::interval(
                (idle_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)),
            );
            tick.tick().await;
            loop {
                tokio::select! {
                    r = &mut conn => { log_conn_end(r); break; }
                    () = close.0.notified() => {
                        tracing::info!(peer = %peer, "closing the connection of a client that stopped reading");
                        break;
                    }
                    () = &mut first, if !first_checked => {
                        first_checked = true;
                        // A connection that never sends a request (stalled preface) is dropped.
                        if !seen_request.load(Ordering::Relaxed) {
                            tracing::debug!(peer = %peer, "no request before the header timeout; closing");
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        if activity.idle_longer_than(idle_timeout) {
                            tracing::debug!(peer = %peer, "idle connection; closing");
                            break;
                        }
                    }
                }
            }
            drop(permit);
            drop(slot);
        });
    }
    tracing::info!("draining");
    confab_common::server::set_not_serving(&reporter, PUBLIC_SERVICES).await;
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over; closing remaining calls"
        ),
    }
    if let Some(t) = metrics_server {
        t.abort();
    }
    Ok(())
}

fn log_conn_end(r: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
