//! `/health`: the gateway, each upstream service (its gRPC health when remote), each
//! service's store (a cheap read through the same channel the gateway routes to, so it
//! works for in-process and remote services alike: SQLite or MongoDB behind the
//! conversation service, the file metadata store behind the file service), and Redis. 200 when everything needed is serving, 503 otherwise — the ALB
//! health check. Results are cached briefly so a busy checker cannot amplify load.

use std::time::{Duration, Instant};

use confab_common::{GrpcChannel, Shutdown};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
const CACHE_FOR: Duration = Duration::from_millis(500);

/// One backend service as the gateway reaches it.
#[derive(Clone)]
pub struct Upstream {
    /// Short name: chat, conversation, files, ratelimit.
    pub name: &'static str,
    /// Fully-qualified gRPC service name.
    pub service: &'static str,
    pub channel: GrpcChannel,
    /// `Some` when remote; `None` when it runs in this process.
    pub url: Option<String>,
}

pub struct HealthState {
    pub upstreams: Vec<Upstream>,
    pub redis_url: Option<String>,
    pub redis_required: bool,
    pub shutdown: Shutdown,
    probes: Vec<Option<tonic::transport::Channel>>,
    cache: tokio::sync::Mutex<Option<(Instant, bool, Value)>>,
}

impl HealthState {
    pub fn new(
        upstreams: Vec<Upstream>,
        redis_url: Option<String>,
        redis_required: bool,
        shutdown: Shutdown,
    ) -> Self {
        let probes = upstreams
            .iter()
            .map(|u| u.url.as_deref().and_then(probe_channel))
            .collect();
        Self {
            probes,
            upstreams,
            redis_url,
            redis_required,
            shutdown,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// (healthy, JSON body).
    pub async fn check(&self) -> (bool, Value) {
        let mut cache = self.cache.lock().await;
        if let Some((at, ok, body)) = &*cache
            && at.elapsed() < CACHE_FOR
        {
            return (*ok, body.clone());
        }
        let draining = self.shutdown.is_triggered();
        let checks = futures::future::join_all(self.upstreams.iter().zip(&self.probes).map(
            |(u, p)| async move {
                let (service, store) =
                    futures::future::join(check_upstream(u, p.clone()), check_store(u)).await;
                (service, store)
            },
        ))
        .await;
        let mut ok = !draining;
        let mut services = serde_json::Map::new();
        for (u, (status, store)) in self.upstreams.iter().zip(checks) {
            ok &= status == "serving";
            let mut entry = json!({
                "mode": if u.url.is_some() { "remote" } else { "in_process" },
                "url": u.url,
                "status": status,
            });
            if let Some(store) = store {
                ok &= store == "serving";
                entry["store"] = json!(store);
            }
            services.insert(u.name.to_owned(), entry);
        }
        let redis = match &self.redis_url {
            None => json!({ "configured": false }),
            Some(url) => {
                let status = redis_ping(url).await;
                if status != "serving" && self.redis_required {
                    ok = false;
                }
                json!({ "configured": true, "status": status, "required": self.redis_required })
            }
        };
        let body = json!({
            "status": if ok { "serving" } else { "not_serving" },
            "gateway": if draining { "draining" } else { "serving" },
            "services": services,
            "redis": redis,
        });
        *cache = Some((Instant::now(), ok, body.clone()));
        (ok, body)
    }
}

/// A plain tonic channel for probing a remote upstream (the shared boxed channel trips a
/// higher-ranked lifetime limitation of rustc inside `Send` futures).
fn probe_channel(url: &str) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .ok()
        .map(|e| e.connect_timeout(CHECK_TIMEOUT).connect_lazy())
}

async fn check_upstream(u: &Upstream, probe: Option<tonic::transport::Channel>) -> &'static str {
    if u.url.is_none() {
        // In this process: it is up when we are.
        return "serving";
    }
    let Some(channel) = probe else {
        return "bad_url";
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: u.service.to_owned(),
    });
    match tokio::time::timeout(CHECK_TIMEOUT, call).await {
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => "serving",
        Ok(Ok(_)) => "not_serving",
        Ok(Err(s)) if s.code() == tonic::Code::NotFound => "unknown_service",
        _ => "unreachable",
    }
}

/// The identity store probes read as (it owns nothing, so the reads are empty).
pub const HEALTH_USER: &str = "confab-health-check";

/// A cheap read that reaches the service's store: `None` for services without one.
/// Boxed with owned inputs so the axum handler's future stays simple.
fn check_store(u: &Upstream) -> futures::future::BoxFuture<'static, Option<&'static str>> {
    let (service, channel) = (u.service, u.channel.clone());
    Box::pin(store_read(service, channel))
}

async fn store_read(service: &'static str, channel: GrpcChannel) -> Option<&'static str> {
    use confab_proto::conversation::v1 as conv;
    use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
    use confab_proto::files::v1 as files;
    use confab_proto::files::v1::file_service_client::FileServiceClient;
    use confab_proto::service_names;

    fn request<T>(message: T) -> tonic::Request<T> {
        let mut req = confab_common::Identity::user(HEALTH_USER).request(message);
        req.set_timeout(CHECK_TIMEOUT);
        req
    }
    let result: Result<(), tonic::Status> = match service {
        service_names::CONVERSATION => {
            let mut client = ConversationServiceClient::new(channel);
            let call = client.list_conversations(request(conv::ListConversationsRequest {
                page_size: 1,
                ..Default::default()
            }));
            match tokio::time::timeout(CHECK_TIMEOUT, call).await {
                Ok(r) => r.map(drop),
                Err(_) => return Some("timeout"),
            }
        }
        service_names::FILES => {
            let mut client = FileServiceClient::new(channel);
            let call = client.list_files(request(files::ListFilesRequest {
                page_size: 1,
                ..Default::default()
            }));
            match tokio::time::timeout(CHECK_TIMEOUT, call).await {
                Ok(r) => r.map(drop),
                Err(_) => return Some("timeout"),
            }
        }
        _ => return None,
    };
    Some(store_status(result.err().map(|s| s.code())))
}

/// A read's outcome as a store status: any answer the service decided on means the store
/// answered; transport and server failures mean it did not.
fn store_status(code: Option<tonic::Code>) -> &'static str {
    use tonic::Code;
    match code {
        None
        | Some(
            Code::NotFound
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::ResourceExhausted
            | Code::FailedPrecondition,
        ) => "serving",
        Some(Code::DeadlineExceeded | Code::Cancelled) => "timeout",
        Some(Code::Unavailable) => "unavailable",
        Some(_) => "error",
    }
}

/// `redis://[user:pass@]host[:port][/db]` → PING. An auth error still means "up".
async fn redis_ping(url: &str) -> &'static str {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return "bad_url";
    };
    let Some(host) = uri.host() else {
        return "bad_url";
    };
    let port = uri.port_u16().unwrap_or(6379);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let ping = async move {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        if uri.scheme_str() == Some("rediss") {
            // TLS: a completed TCP handshake is the best we can say without a TLS client.
            return Ok::<_, std::io::Error>(true);
        }
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        Ok(buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
        Ok(Ok(true)) => "serving",
        Ok(Ok(false)) => "not_serving",
        _ => "unreachable",
    }
}
