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
    // Served like the real chat binary: confab_common's GrpcServer (TCP_NODELAY on
    // accepted sockets, the same HTTP/2 settings).
    let routes = tonic::service::Routes::new(ChatServiceServer::new(fake));
    let server =
        confab_common::server::GrpcServer::new(routes, &[confab_proto::service_names::CHAT])
            .await?;
    let stop_chat = confab_common::Shutdown::new();
    tokio::spawn(server.serve(chat_listener, stop_chat.clone(), Duration::from_secs(1)));

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
        .env(
            "RUST_LOG",
            std::env::var("BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
        )
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

    // Phase 1: time to first token, direct vs through the gateway, in the same run, at
    // several concurrencies. Both sides use the same client (a plain tonic channel with
    // TCP_NODELAY, as an application would); rounds alternate direct and gateway so
    // background load hits both alike.
    let direct = connect(chat_addr).await?;
    let via = connect(gw_addr).await?;
    for _ in 0..20 {
        ttft(&mut ChatServiceClient::new(direct.clone()), None).await?;
        ttft(&mut ChatServiceClient::new(via.clone()), Some(&token)).await?;
    }
    let mut latency = Vec::new();
    for (concurrency, per_worker) in [(1usize, 200usize), (10, 30), (100, 5)] {
        let (mut d, mut g) = (Vec::new(), Vec::new());
        for round in 0..per_worker * 2 {
            let through_gateway = round % 2 == 1;
            let runs = (0..concurrency).map(|_| {
                let channel = if through_gateway {
                    via.clone()
                } else {
                    direct.clone()
                };
                let token = through_gateway.then(|| token.clone());
                async move { ttft(&mut ChatServiceClient::new(channel), token.as_deref()).await }
            });
            for r in futures::future::join_all(runs).await {
                if through_gateway {
                    g.push(r?)
                } else {
                    d.push(r?)
                }
            }
        }
        latency.push((
            concurrency,
            percentile(&mut d, 0.5),
            percentile(&mut d, 0.99),
            percentile(&mut g, 0.5),
            percentile(&mut g, 0.99),
            d.len(),
        ));
    }

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
    println!("  time to first token (ms), direct to chat vs through the gateway, same run:");
    println!("    concurrency  samples  direct p50  p99     gateway p50  p99     added p50  p99");
    for (c, d50, d99, g50, g99, n) in latency {
        println!(
            "    {c:>11}  {n:>7}  {d50:>10.2}  {d99:<7.2} {g50:>11.2}  {g99:<7.2} {:>9.2}  {:.2}",
            g50 - d50,
            g99 - d99
        );
    }
    println!(
        "  gateway RSS after the streams ended: {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );
    stop_chat.trigger();
    let _ = child.start_kill();
    let _ = child.wait().await;
    anyhow::ensure!(errors == 0, "{errors} streams failed");
    Ok(())
}
