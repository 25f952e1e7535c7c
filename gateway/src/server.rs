//! The listener: HTTP/1.1 and h2c on one port (hyper-util's auto builder), grpc-web
//! translation (tonic-web), CORS, connection limits, slowloris timeouts, and a graceful
//! drain (health NOT_SERVING first, then in-flight calls get the grace period).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
use crate::config::{CorsOrigins, Limits};
use crate::health::HealthState;
use crate::http::{HttpState, path_label, router};
use crate::proxy::{GrpcWeb, PUBLIC_SERVICES, PeerAddr, Proxy};

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
    let proxy = Proxy::new(
        gateway.channels(),
        BoxCloneSyncService::new(local),
        gateway.auth.clone(),
        gateway.metrics.clone(),
        gateway.edge.limits.clone(),
        gateway.edge.trusted_proxy_hops,
    );
    let grpc = tonic_web::GrpcWebLayer::new().layer(proxy);
    let http = router(
        HttpState {
            auth: gateway.auth.clone(),
            health,
            metrics: gateway.metrics.clone(),
            allow_anonymous: gateway.edge.allow_anonymous,
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
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
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
        let _ = stream.set_nodelay(true);
        let seen_request = Arc::new(AtomicBool::new(false));
        let svc = service.clone();
        let seen = seen_request.clone();
        let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(PeerAddr(peer));
            svc.clone().oneshot(req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), hyper_svc)
            .into_owned();
        let conn = graceful.watch(conn);
        let first_request_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            // A connection that never sends a request (stalled preface) is dropped.
            tokio::select! {
                r = &mut conn => { log_conn_end(r); drop(permit); return; }
                _ = tokio::time::sleep(first_request_timeout) => {}
            }
            if !seen_request.load(Ordering::Relaxed) {
                tracing::debug!(peer = %peer, "no request before the header timeout; closing");
                return;
            }
            log_conn_end(conn.await);
            drop(permit);
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
    Ok(())
}

fn log_conn_end(r: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
