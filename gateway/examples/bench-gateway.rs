//! `make bench-gateway`: many concurrent slow chat streams through the gateway.
//!
//! A fake chat service (in this process) streams one token every `BENCH_INTERVAL_MS`
//! (50) for `BENCH_SECS` (30). The gateway runs as a child process (this binary again,
//! with `--serve-gateway`) so its memory is measured alone. Reports: errors (target
//! none), gateway RSS per open stream, and time to first token through the gateway
//! minus direct to the chat service, measured in the same run.
//! Env: BENCH_STREAMS (5000), BENCH_SECS (30), BENCH_INTERVAL_MS (50), BENCH_CONNECTIONS (50).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::chat::v1::chat_service_server::{ChatService, ChatServiceServer};
use futures::Stream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct FakeChat {
    interval: Duration,
    duration: Duration,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<chat::ChatEvent, Status>> + Send>>;

fn event(seq: u64, e: chat::chat_event::Event) -> chat::ChatEvent {
    chat::ChatEvent {
        sequence: seq,
        generation_id: "g".into(),
        conversation_id: "c".into(),
        event: Some(e),
    }
}

#[tonic::async_trait]
impl ChatService for FakeChat {
    async fn send_message(
        &self,
        req: Request<chat::SendMessageRequest>,
    ) -> Result<Response<EventStream>, Status> {
        use chat::chat_event::Event;
        if confab_common::Identity::from_request(&req).is_err() {
            return Err(Status::unauthenticated("no identity"));
        }
        // "fast": one token at once (latency phase); otherwise slow tokens.
        let fast = req.get_ref().model == "fast";
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (interval, duration) = (self.interval, self.duration);
        tokio::spawn(async move {
            let mut seq = 1;
            let started = event(
                seq,
                Event::Started(chat::Started {
                    model: "bench".into(),
                    ..Default::default()
                }),
            );
            if tx.send(Ok(started)).await.is_err() {
                return;
            }
            let tokens = if fast {
                1
            } else {
                (duration.as_millis() / interval.as_millis().max(1)) as u64
            };
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for _ in 0..tokens {
                if !fast {
                    tick.tick().await;
                }
                seq += 1;
                let d = event(
                    seq,
                    Event::Delta(chat::TokenDelta {
                        text: "tok ".into(),
                    }),
                );
                if tx.send(Ok(d)).await.is_err() {
                    return; // the client went away
                }
            }
            seq += 1;
            let _ = tx
                .send(Ok(event(seq, Event::Completed(chat::Completed::default()))))
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn ttft<C>(client: &mut ChatServiceClient<C>, token: Option<&str>) -> Result<f64, Status>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    C::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <C::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut req = Request::new(chat::SendMessageRequest {
        content: if token.is_some() { "gw" } else { "direct" }.into(),
        model: "fast".into(),
        ..Default::default()
    });
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
        );
    } else {
        confab_common::Identity::user("bench").write_to(req.metadata_mut());
    }
    let start = Instant::now();
    let mut s = client.send_message(req).await?.into_inner();
    let mut first = None;
    while let Some(ev) = s.message().await? {
        if first.is_none() && matches!(ev.event, Some(chat::chat_event::Event::Delta(_))) {
            first = Some(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    first.ok_or_else(|| Status::internal("no token"))
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--serve-gateway") {
        // The child: the real gateway binary's main.
        confab_common::binary::main(
            "confab-gateway",
            8080,
            confab_gateway::Config::from_env,
            confab_gateway::run,
        )
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let secs = env_num("BENCH_SECS", 30);
    let code = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(secs + 150), bench()).await {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("bench failed: {e:#}");
                1
            }
            Err(_) => {
                eprintln!("bench timed out");
                1
            }
        }
    });
    std::process::exit(code);
}

async fn bench() -> anyhow::Result<()> {
    let streams = env_num("BENCH_STREAMS", 5000) as usize;
    let secs = env_num("BENCH_SECS", 30);
    let interval = Duration::from_millis(env_num("BENCH_INTERVAL_MS", 50));
    let connections = env_num("BENCH_CONNECTIONS", 50).max(1) as usize;

    // The fake chat service.
    let chat_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let chat_addr = chat_listener.local_addr()?;
    let fake = FakeChat {
        interval,
        duration: Duration::from_secs(secs),
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            confab_proto::service_names::CHAT,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .add_service(ChatServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                chat_listener,
            )),
    );

    // The gateway, alone in its process.
    let gw_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let gw_addr: std::net::SocketAddr = format!("127.0.0.1:{gw_port}").parse()?;
    let data = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--serve-gateway")
        .env("CONFAB_ADDR", gw_addr.to_string())
        .env("CONFAB_CHAT_URL", format!("http://{chat_addr}"))
        .env("CONFAB_DATA_DIR", data.path())
        .env("CONFAB_WEB_DIR", data.path())
        .env("RUST_LOG", "warn")
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("http://{gw_addr}/health")).send().await
            && r.status() == 200
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session: serde_json::Value = http
        .post(format!("http://{gw_addr}/auth/session"))
        .send()
        .await?
        .json()
        .await?;
    let token = session["token"].as_str().unwrap_or_default().to_owned();

    // Phase 1: time to first token, direct vs through the gateway, interleaved.
    // Direct: the same client stack the gateway uses for its upstreams.
    // Request bodies are sent whole, as the gateway forwards them (a streamed unary body
    // costs a delayed-ACK round trip on loopback that would flatter the gateway).
    let upstream =
        confab_common::channel::remote("CONFAB_CHAT_URL", &format!("http://{chat_addr}"))?;
    let whole_body = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let upstream = upstream.clone();
        async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let req = http::Request::from_parts(
                parts,
                tonic::body::Body::new(http_body_util::Full::new(bytes)),
            );
            upstream.oneshot(req).await
        }
    });
    let mut direct = ChatServiceClient::new(whole_body);
    let mut via = ChatServiceClient::new(connect(gw_addr).await?);
    let (mut d, mut g) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        ttft(&mut direct, None).await?;
        ttft(&mut via, Some(&token)).await?;
    }
    for _ in 0..300 {
        d.push(ttft(&mut direct, None).await?);
        g.push(ttft(&mut via, Some(&token)).await?);
    }
    let (d50, d99) = (percentile(&mut d, 0.5), percentile(&mut d, 0.99));
    let (g50, g99) = (percentile(&mut g, 0.5), percentile(&mut g, 0.99));

    // Phase 2: hold many slow streams.
    let rss_before = rss_kib(pid);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect(gw_addr).await?);
    }
    let errors = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut client = ChatServiceClient::new(channels[i % connections].clone());
        let token = token.clone();
        let (errors, tokens, open) = (errors.clone(), tokens.clone(), open.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = Request::new(chat::SendMessageRequest {
                content: "slow".into(),
                ..Default::default()
            });
            req.metadata_mut().insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
            );
            let result = async {
                let mut s = client.send_message(req).await?.into_inner();
                open.fetch_add(1, Ordering::Relaxed);
                let mut completed = false;
                while let Some(ev) = s.message().await? {
                    match ev.event {
                        Some(chat::chat_event::Event::Delta(_)) => {
                            tokens.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(chat::chat_event::Event::Completed(_)) => completed = true,
                        _ => {}
                    }
                }
                open.fetch_sub(1, Ordering::Relaxed);
                if completed {
                    Ok(())
                } else {
                    Err(Status::internal("stream ended without Completed"))
                }
            }
            .await;
            if let Err(e) = result
                && errors.fetch_add(1, Ordering::Relaxed) < 5
            {
                eprintln!("stream error: {e}");
            }
        }));
    }
    // Sample memory while the streams are open.
    let mut peak_rss = rss_before;
    let mut peak_open = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(rss_kib(pid));
        peak_open = peak_open.max(open.load(Ordering::Relaxed));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = started.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    let tokens = tokens.load(Ordering::Relaxed);
    let expected = streams as u64 * (secs * 1000 / interval.as_millis().max(1) as u64);
    let per_stream_kib = (peak_rss.saturating_sub(rss_before)) as f64 / peak_open.max(1) as f64;

    println!(
        "bench-gateway: {streams} streams over {connections} h2 connections, one token every {} ms for {secs} s",
        interval.as_millis()
    );
    println!("  errors:                  {errors} (target 0)");
    println!("  peak open streams:       {peak_open}");
    println!(
        "  tokens delivered:        {tokens} of {expected} ({:.1}%), wall {wall:.1} s",
        100.0 * tokens as f64 / expected.max(1) as f64
    );
    println!(
        "  gateway RSS:             {:.1} MiB idle -> {:.1} MiB peak",
        rss_before as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!("  gateway memory/stream:   {per_stream_kib:.1} KiB");
    println!(
        "  time to first token:     direct p50 {d50:.2} ms p99 {d99:.2} ms; via gateway p50 {g50:.2} ms p99 {g99:.2} ms"
    );
    println!(
        "  added by the gateway:    p50 {:.2} ms, p99 {:.2} ms (ratio p50 {:.2}x)",
        g50 - d50,
        g99 - d99,
        g50 / d50
    );
    println!(
        "  (the via-gateway TTFT includes the upstream hop, so it bounds the added latency: p99 <= {g99:.2} ms)"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    anyhow::ensure!(errors == 0, "{errors} streams failed");
    Ok(())
}
