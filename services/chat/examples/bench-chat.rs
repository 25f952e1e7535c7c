//! `make bench-chat`: time to first token (TTFT) and tokens/s through the chat service
//! (gRPC over loopback, dependencies in-process) versus calling the same fake upstream
//! directly, at 1, 10 and 100 concurrent streams. Target: p99 added TTFT < 5 ms at 100.

#[path = "../tests/chat/fakes.rs"]
#[allow(dead_code)]
mod fakes;
#[path = "../tests/chat/upstream.rs"]
mod upstream;

use std::time::{Duration, Instant};

use confab_chat::provider::openai::{OpenAiConfig, model_spec};
use confab_chat::{ChatDeps, ChatServiceImpl, Config};
use confab_common::Identity;
use confab_common::channel::in_process;
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_event::Event;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::chat::v1::chat_service_server::ChatServiceServer;
use confab_proto::conversation::v1 as conv;
use eventsource_stream::Eventsource;
use futures::StreamExt;

const TOKENS: usize = 50;
const BUDGET: Duration = Duration::from_secs(150);

struct Sample {
    /// Through chat: until the Started event (quota, stores, plan).
    started: Duration,
    ttft: Duration,
    total: Duration,
    tokens: usize,
}

async fn direct(http: &reqwest::Client, url: &str) -> Sample {
    let t0 = Instant::now();
    let body = serde_json::json!({
        "model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "[scenario:tokens]"}]
    });
    let resp = http.post(url).json(&body).send().await.expect("upstream");
    let mut events = resp.bytes_stream().eventsource();
    let mut ttft = None;
    let mut tokens = 0;
    while let Some(Ok(ev)) = events.next().await {
        if ev.data.contains("\"content\"") {
            ttft.get_or_insert_with(|| t0.elapsed());
            tokens += 1; // one fake token per chunk
        }
    }
    Sample {
        started: Duration::ZERO,
        ttft: ttft.expect("a token"),
        total: t0.elapsed(),
        tokens,
    }
}

async fn through_chat(
    client: &mut ChatServiceClient<tonic::transport::Channel>,
    user: &Identity,
    conversation_id: &str,
) -> Sample {
    let t0 = Instant::now();
    let mut s = client
        .send_message(user.request(chat::SendMessageRequest {
            conversation_id: conversation_id.to_owned(),
            content: "[scenario:tokens]".into(),
            ..Default::default()
        }))
        .await
        .expect("send")
        .into_inner();
    let mut ttft = None;
    let mut started = None;
    let mut tokens = 0;
    while let Some(ev) = s.next().await {
        match ev.expect("event").event {
            Some(Event::Started(_)) => {
                started = Some(t0.elapsed());
            }
            Some(Event::Delta(d)) => {
                ttft.get_or_insert_with(|| t0.elapsed());
                // Waiting deltas may be coalesced: count the fake tokens ("tN ") in the text.
                tokens += d.text.split_whitespace().count();
            }
            Some(Event::Failed(f)) => panic!("failed: {f:?}"),
            _ => {}
        }
    }
    Sample {
        started: started.expect("Started"),
        ttft: ttft.expect("a token"),
        total: t0.elapsed(),
        tokens,
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let up = upstream::FakeUpstream::start().await;
    let (conv, files, limits) = (
        fakes::FakeConversation::default(),
        fakes::FakeFiles::default(),
        fakes::FakeLimits::default(),
    );
    let deps = ChatDeps {
        conversation: in_process(conv.server()),
        files: in_process(files.server()),
        ratelimit: in_process(limits.server()),
    };
    let mut o = OpenAiConfig::new("sk-bench", Some(up.base_url()));
    o.models = Some(vec![model_spec("openai-compatible", "gpt-4o")]);
    let config = Config {
        openai: Some(o),
        ..Config::default()
    };
    let svc = ChatServiceImpl::with_deps(config, deps).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The production server (health, reflection, trace spans, TCP_NODELAY).
    let server = confab_common::server::GrpcServer::new(
        tonic::service::Routes::new(ChatServiceServer::new(svc)),
        &[confab_proto::service_names::CHAT],
    )
    .await
    .unwrap();
    tokio::spawn(server.serve(
        listener,
        confab_common::Shutdown::new(),
        Duration::from_secs(1),
    ));
    // A few HTTP/2 connections, as a gateway with several workers would hold.
    let mut channels = vec![];
    for _ in 0..4 {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .tcp_nodelay(true)
                .connect()
                .await
                .unwrap(),
        );
    }
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let url = format!("{}/chat/completions", up.base_url());
    let user = Identity::user("bench-user");
    let started = Instant::now();

    println!(
        "bench-chat: {TOKENS} tokens per stream, fake upstream on loopback, dependencies in-process"
    );
    println!(
        "{:>5} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>10} {:>10} | {:>9} {:>9}",
        "conc",
        "n",
        "direct50",
        "direct99",
        "chat50",
        "chat99",
        "added p50",
        "added p99",
        "tok/s dir",
        "tok/s chat"
    );
    let mut verdict = None;
    for &conc in &[1usize, 10, 100] {
        let rounds = match conc {
            1 => 200,
            10 => 60,
            _ => 10,
        };
        // One conversation per worker, already named (no title call in the measurement);
        // emptied between rounds so history does not grow.
        let convs: Vec<String> = (0..conc)
            .map(|_| {
                let id = uuid::Uuid::new_v4().to_string();
                conv.0.lock().conversations.insert(
                    id.clone(),
                    (
                        user.user_id.clone(),
                        conv::Conversation {
                            id: id.clone(),
                            title: "bench".into(),
                            title_set: true,
                            ..Default::default()
                        },
                    ),
                );
                id
            })
            .collect();
        let mut d_ttft = vec![];
        let mut c_ttft = vec![];
        let mut c_started = vec![];
        let (mut d_tok, mut d_time, mut c_tok, mut c_time) = (0usize, 0f64, 0usize, 0f64);
        for _ in 0..rounds {
            if started.elapsed() > BUDGET {
                break;
            }
            conv.0.lock().messages.clear();
            // Direct and through-chat batches alternate so both see the same machine load.
            // Each stream is its own task (both cores), for both paths alike.
            let direct_batch = futures::future::join_all((0..conc).map(|_| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move { direct(&http, &url).await })
            }))
            .await;
            let chat_batch = futures::future::join_all(convs.iter().enumerate().map(|(i, cid)| {
                let mut client = ChatServiceClient::new(channels[i % channels.len()].clone());
                let user = user.clone();
                let cid = cid.clone();
                tokio::spawn(async move { through_chat(&mut client, &user, &cid).await })
            }))
            .await;
            for s in direct_batch.into_iter().map(Result::unwrap) {
                d_ttft.push(s.ttft);
                d_tok += s.tokens;
                d_time += s.total.as_secs_f64();
            }
            for s in chat_batch.into_iter().map(Result::unwrap) {
                c_ttft.push(s.ttft);
                c_started.push(s.started);
                c_tok += s.tokens;
                c_time += s.total.as_secs_f64();
            }
        }
        let n = c_ttft.len();
        let (d50, d99) = (pct(&mut d_ttft, 0.5), pct(&mut d_ttft, 0.99));
        let (c50, c99) = (pct(&mut c_ttft, 0.5), pct(&mut c_ttft, 0.99));
        let added50 = ms(c50) - ms(d50);
        let added99 = ms(c99) - ms(d99);
        println!(
            "{conc:>5} {n:>6} | {:>7.2}ms {:>7.2}ms | {:>7.2}ms {:>7.2}ms | {:>8.2}ms {:>8.2}ms | {:>9.0} {:>10.0}",
            ms(d50),
            ms(d99),
            ms(c50),
            ms(c99),
            added50,
            added99,
            d_tok as f64 / d_time,
            c_tok as f64 / c_time,
        );
        println!(
            "{:>12} chat: Started event p50 {:.2} ms, p99 {:.2} ms (quota, stores, plan before the model call)",
            "",
            ms(pct(&mut c_started, 0.5)),
            ms(pct(&mut c_started, 0.99))
        );
        if conc == 100 {
            verdict = Some(added99);
        }
    }
    if let Some(a) = verdict {
        println!(
            "target p99 added TTFT < 5 ms at 100 streams: {:.2} ms → {}",
            a,
            if a < 5.0 { "MET" } else { "NOT MET" }
        );
    }
    println!("upstream streams dropped early: {}", up.dropped());
}
