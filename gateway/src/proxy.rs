//! The generic gRPC proxy: every public method of chat, conversation and files is
//! forwarded to its service's channel (remote or in-process) without per-RPC code.
//! Which methods exist, and which stream, comes from the protos' descriptor set.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_common::GrpcChannel;
use confab_common::identity::{ALL_KEYS, Identity};
use confab_proto::service_names;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tracing::Instrument;

use crate::auth::{AuthError, Authenticator, client_addr};
use crate::config::Limits;
use crate::metrics::{Metrics, Rpc, RpcCode, ServiceLabel};

/// The TCP peer of a request's connection (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Marks a request that arrived as grpc-web (a request extension, for the access log).
#[derive(Clone, Copy, Debug)]
pub struct GrpcWeb;

/// Health and reflection, served by the gateway itself without credentials.
pub type LocalRoutes = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

#[derive(Clone, Copy, Debug)]
struct MethodInfo {
    server_streaming: bool,
}

/// The services the gateway exposes, by fully-qualified name.
pub const PUBLIC_SERVICES: &[&str] = &[
    service_names::CHAT,
    service_names::CONVERSATION,
    service_names::FILES,
];

pub struct ProxyInner {
    upstreams: HashMap<&'static str, GrpcChannel>,
    methods: HashMap<String, MethodInfo>,
    local: LocalRoutes,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    limits: Limits,
    trusted_hops: usize,
}

#[derive(Clone)]
pub struct Proxy(Arc<ProxyInner>);

fn public_methods() -> HashMap<String, MethodInfo> {
    let set = prost_types::FileDescriptorSet::decode(confab_proto::FILE_DESCRIPTOR_SET)
        .expect("checked-in descriptor set decodes");
    let mut out = HashMap::new();
    for file in &set.file {
        for svc in &file.service {
            let full = format!("{}.{}", file.package(), svc.name());
            if !PUBLIC_SERVICES.contains(&full.as_str()) {
                continue;
            }
            for m in &svc.method {
                let path = format!("/{full}/{}", m.name());
                if confab_proto::INTERNAL_METHODS.contains(&path.as_str()) {
                    continue;
                }
                let server_streaming = m.server_streaming();
                out.insert(path, MethodInfo { server_streaming });
            }
        }
    }
    out
}

impl Proxy {
    pub fn new(
        upstreams: HashMap<&'static str, GrpcChannel>,
        local: LocalRoutes,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        limits: Limits,
        trusted_hops: usize,
    ) -> Self {
        Self(Arc::new(ProxyInner {
            upstreams,
            methods: public_methods(),
            local,
            auth,
            metrics,
            limits,
            trusted_hops,
        }))
    }

    /// Public method paths (for tests and docs).
    pub fn method_paths(&self) -> Vec<String> {
        self.0.methods.keys().cloned().collect()
    }
}

impl tower::Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { Ok(inner.handle(req).await) })
    }
}

fn status_response(status: Status) -> Response<Body> {
    status.into_http()
}

fn unavailable(service: &str, e: &(dyn std::error::Error + Send + Sync)) -> Status {
    tracing::warn!(error = %e, service = %service, "upstream call failed");
    Status::unavailable(format!("{service} is unavailable; try again shortly"))
}

fn auth_status(e: &AuthError) -> Status {
    Status::unauthenticated(e.to_string())
}

/// `grpc-timeout` header → duration (gRPC wire format: digits + unit).
fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn grpc_timeout_value(d: Duration) -> HeaderValue {
    // Milliseconds, at most 8 digits as the spec requires.
    let ms = d.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).expect("digits are a valid header")
}

impl ProxyInner {
    async fn handle(self: Arc<Self>, mut req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
            return match self.local.clone().oneshot(req).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
        }
        let (service, method) = confab_telemetry::split_grpc_path(&path);
        let (service, method) = (service.to_owned(), method.to_owned());
        let started = Instant::now();
        let grpc_web = req.extensions().get::<GrpcWeb>().is_some();
        let span = confab_telemetry::grpc_server_span(&req);
        let Some(info) = self.methods.get(&path).copied() else {
            let status = if confab_proto::INTERNAL_METHODS.contains(&path.as_str()) {
                Status::permission_denied(format!("{path} is internal to Confab"))
            } else if service == service_names::RATELIMIT {
                Status::permission_denied("the rate-limit service is internal to Confab")
            } else {
                Status::unimplemented(format!("unknown method {path}"))
            };
            self.finish_early(&service, &method, status.code(), started, None, grpc_web);
            return status_response(status);
        };
        let upstream = self
            .upstreams
            .get(service.as_str())
            .cloned()
            .expect("every public service has a channel");

        // Who is calling.
        let principal = match self.auth.authenticate(req.headers()).await {
            Ok(p) => p,
            Err(e) => {
                let status = auth_status(&e);
                self.finish_early(&service, &method, status.code(), started, None, grpc_web);
                tracing::debug!(parent: &span, error = %e, "unauthenticated");
                return status_response(status);
            }
        };
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        let addr = client_addr(peer, req.headers(), self.trusted_hops);
        let identity = Identity {
            user_id: principal.user_id,
            anonymous: principal.anonymous,
            client_addr: addr,
        };
        span.record("user", identity.user_id.as_str());

        // Strip what the client claimed about itself; say what we verified.
        let headers = req.headers_mut();
        for key in ALL_KEYS {
            headers.remove(*key);
        }
        headers.remove(http::header::AUTHORIZATION);
        headers.remove(http::header::COOKIE);
        let mut md = tonic::metadata::MetadataMap::from_headers(std::mem::take(headers));
        identity.write_to(&mut md);
        *req.headers_mut() = md.into_headers();

        // Deadlines: the client's, capped for unary calls.
        let client_deadline = parse_grpc_timeout(req.headers());
        let deadline = if info.server_streaming {
            client_deadline
        } else {
            Some(client_deadline.map_or(self.limits.unary_timeout, |d| {
                d.min(self.limits.unary_timeout)
            }))
        };
        if let Some(d) = deadline {
            req.headers_mut()
                .insert("grpc-timeout", grpc_timeout_value(d));
        }

        let this = self.clone();
        let user = identity.user_id.clone();
        let call = async move {
            // Public RPCs are unary or server-streaming: one request message, read whole
            // so its size is checked before anything reaches a service.
            let (parts, body) = req.into_parts();
            let max = this.limits.max_message_bytes + 5;
            let bytes = match http_body_util::Limited::new(body, max).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    let status = if e
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Status::resource_exhausted(format!(
                            "request message is larger than the {}-byte limit",
                            this.limits.max_message_bytes
                        ))
                    } else {
                        Status::cancelled("request body was not received")
                    };
                    this.finish_early(
                        &service,
                        &method,
                        status.code(),
                        started,
                        Some(&user),
                        grpc_web,
                    );
                    return status_response(status);
                }
            };
            let bytes_in = bytes.len();
            let req = Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
            let response = match deadline {
                Some(d) => match tokio::time::timeout(d, upstream.oneshot(req)).await {
                    Ok(r) => r.map_err(|e| unavailable(&service, &*e)),
                    Err(_) => Err(Status::deadline_exceeded(
                        "the call took longer than its deadline",
                    )),
                },
                None => upstream
                    .oneshot(req)
                    .await
                    .map_err(|e| unavailable(&service, &*e)),
            };
            let response = match response {
                Ok(r) => r,
                Err(status) => {
                    this.finish_early(
                        &service,
                        &method,
                        status.code(),
                        started,
                        Some(&user),
                        grpc_web,
                    );
                    return status_response(status);
                }
            };
            let header_code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(Code::from_i32);
            let record = CallRecord {
                metrics: this.metrics.clone(),
                service,
                method,
                user,
                started,
                streaming: info.server_streaming,
                grpc_web,
                bytes_in,
                bytes_out: 0,
                code: header_code,
                done: false,
                span: tracing::Span::current(),
            };
            if info.server_streaming {
                record.stream_opened();
            }
            response.map(|body| {
                Body::new(ObservedBody {
                    inner: body,
                    record,
                })
            })
        };
        call.instrument(span).await
    }

    fn finish_early(
        &self,
        service: &str,
        method: &str,
        code: Code,
        started: Instant,
        user: Option<&str>,
        grpc_web: bool,
    ) {
        let mut r = CallRecord {
            metrics: self.metrics.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            user: user.unwrap_or("-").to_owned(),
            started,
            streaming: false,
            grpc_web,
            bytes_in: 0,
            bytes_out: 0,
            code: Some(code),
            done: false,
            span: tracing::Span::current(),
        };
        r.finish();
    }
}

/// One call's bookkeeping: metrics and the access log line, written exactly once when
/// the response ends (or is dropped: the client went away).
struct CallRecord {
    metrics: Arc<Metrics>,
    service: String,
    method: String,
    user: String,
    started: Instant,
    streaming: bool,
    grpc_web: bool,
    bytes_in: usize,
    bytes_out: usize,
    code: Option<Code>,
    done: bool,
    span: tracing::Span,
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl CallRecord {
    fn stream_opened(&self) {
        self.metrics
            .open_streams
            .get_or_create(&ServiceLabel {
                service: self.service.clone(),
            })
            .inc();
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        // Ended without a status: the client (or the connection) went away.
        let code = self.code.unwrap_or(Code::Cancelled);
        let elapsed = self.started.elapsed();
        let known = PUBLIC_SERVICES.contains(&self.service.as_str());
        // Unknown paths are folded into one label set to keep cardinality bounded.
        let (service, method) = if known {
            (self.service.clone(), self.method.clone())
        } else {
            ("other".to_owned(), "other".to_owned())
        };
        self.metrics
            .rpc_requests
            .get_or_create(&RpcCode {
                service: service.clone(),
                method: method.clone(),
                code: code_name(code).to_owned(),
            })
            .inc();
        self.metrics
            .rpc_duration
            .get_or_create(&Rpc { service, method })
            .observe(elapsed.as_secs_f64());
        if self.streaming {
            self.metrics
                .open_streams
                .get_or_create(&ServiceLabel {
                    service: self.service.clone(),
                })
                .dec();
        }
        let _e = self.span.enter();
        tracing::info!(
            target: "confab_gateway::access",
            service = %self.service,
            method = %self.method,
            user = %self.user,
            code = code_name(code),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            protocol = if self.grpc_web { "grpc-web" } else { "grpc" },
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            "access"
        );
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The upstream response body, observed: bytes and the final status.
struct ObservedBody {
    inner: Body,
    record: CallRecord,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes_out += data.len();
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.record.code = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(Code::from_i32)
                        .or(this.record.code);
                }
            }
            Poll::Ready(Some(Err(s))) => {
                this.record.code = Some(s.code());
                this.record.finish();
            }
            Poll::Ready(None) => {
                if this.record.code.is_none() {
                    this.record.code = Some(Code::Unknown);
                }
                this.record.finish();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
