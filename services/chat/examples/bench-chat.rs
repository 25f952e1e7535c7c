//! `make bench-chat`: time to first token (TTFT) and tokens/s through the chat service
//! (gRPC over loopback; the real conversation store on SQLite, the real file service and
//! the real rate limiter in-process) versus calling the same fake upstream directly, in
//! the same run, at 1, 10 and 100 concurrent streams. Each stream is a different user
//! continuing a conversation that already has a few exchanges.
//!
//! Two load shapes:
//! - **steady** (the target): N users each keep one answer streaming at all times (a new
//!   question as soon as the previous answer ends); the upstream streams 50 tokens at
//!   100 tokens/s. Direct and through-chat phases alternate under the same shape.
//! - **burst**: N questions sent in the same instant, the upstream answering as fast as
//!   it can — every stream's preparation queues behind the others' on two cores. Shown
//!   for what it is (a worst case), without a target.
//!
//! Target: p99 added TTFT < 5 ms at 100 concurrent streams (steady).

#[path = "../tests/chat/upstream.rs"]
mod upstream;

use std::sync::Arc;
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
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use eventsource_stream::Eventsource;
use futures::StreamExt;

const LEVELS: [usize; 3] = [1, 10, 100];
/// Steady phases per level and path (direct and chat alternate), and each one's length.
const STEADY_PHASES: usize = 2;
const STEADY_PHASE: Duration = Duration::from_secs(6);
const BURST_ROUNDS: usize = 8;
/// How long the paced upstream takes to stream one answer (50 tokens, 10 ms apart).
const ANSWER_TIME: Duration = Duration::from_millis(500);
/// Earlier question/answer pairs in each conversation (the history every turn reads).
const HISTORY_EXCHANGES: usize = 3;

struct Sample {
    ttft: Duration,
    tokens: usize,
}

/// One streamed completion straight from the upstream.
async fn direct(http: &reqwest::Client, url: &str, scenario: &str) -> Sample {
    let t0 = Instant::now();
    // The same prompt the chat service sends: the earlier exchanges, then the question.
    let mut messages: Vec<serde_json::Value> = (0..HISTORY_EXCHANGES * 2)
        .map(|i| {
            serde_json::json!({
                "role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": history_text(i),
            })
        })
        .collect();
    messages.push(serde_json::json!({"role": "user", "content": format!("[scenario:{scenario}]")}));
    let body = serde_json::json!({
        "model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
        "max_completion_tokens": 4096, "messages": messages
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
        ttft: ttft.expect("a token"),
        tokens,
    }
}

/// One answer through the chat service.
async fn through_chat(
    client: &mut ChatServiceClient<tonic::transport::Channel>,
    user: &Identity,
    conversation_id: &str,
    scenario: &str,
) -> Sample {
    let t0 = Instant::now();
    let mut s = client
        .send_message(user.request(chat::SendMessageRequest {
            conversation_id: conversation_id.to_owned(),
            content: format!("[scenario:{scenario}]"),
            ..Default::default()
        }))
        .await
        .expect("send")
        .into_inner();
    let mut ttft = None;
    let mut tokens = 0;
    while let Some(ev) = s.next().await {
        match ev.expect("event").event {
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
        ttft: ttft.expect("a token"),
        tokens,
    }
}

fn history_text(i: usize) -> String {
    format!("earlier message {i}: {}", "some words ".repeat(20))
}

/// `per_user` named conversations for each user, each with `HISTORY_EXCHANGES` earlier
/// exchanges (users seeded in parallel).
async fn seed_conversations(
    store: &ConversationServiceClient<confab_common::GrpcChannel>,
    users: &[Identity],
    per_user: usize,
) -> Vec<Vec<String>> {
    let seeds = users.iter().map(|user| {
        let mut store = store.clone();
        let user = user.clone();
        async move {
            let mut ids = Vec::with_capacity(per_user);
            for _ in 0..per_user {
                let c = store
                    .create_conversation(user.request(conv::CreateConversationRequest {
                        title: "bench".into(),
                        ..Default::default()
                    }))
                    .await
                    .expect("create conversation")
                    .into_inner();
                for i in 0..HISTORY_EXCHANGES * 2 {
                    let role = if i % 2 == 0 {
                        conv::Role::User
                    } else {
                        conv::Role::Assistant
                    };
                    store
                        .append_message(user.request(conv::AppendMessageRequest {
                            conversation_id: c.id.clone(),
                            role: role as i32,
                            content: history_text(i),
                            status: conv::MessageStatus::Complete as i32,
                            ..Default::default()
                        }))
                        .await
                        .expect("append history");
                }
                ids.push(c.id);
            }
            ids
        }
    });
    futures::future::join_all(seeds).await
}

/// What a run needs to reach both paths.
struct Bench {
    http: reqwest::Client,
    url: String,
    channels: Vec<tonic::transport::Channel>,
    users: Vec<Identity>,
    store: ConversationServiceClient<confab_common::GrpcChannel>,
}

impl Bench {
    /// `conc` workers, each sending its next request as soon as the previous one ended,
    /// for `length`; the samples, and the tokens per second all workers received.
    async fn steady(
        self: &Arc<Self>,
        conc: usize,
        chat: Option<&[Vec<String>]>,
    ) -> (Vec<Sample>, f64, f64) {
        let t0 = Instant::now();
        let cpu0 = cpu_seconds();
        let workers = (0..conc).map(|i| {
            let this = self.clone();
            // Each turn continues a different conversation with the same earlier
            // exchanges, so every prompt matches the direct one (no history growth).
            let conversations = chat.map(|c| c[i].clone());
            tokio::spawn(async move {
                let mut out = vec![];
                let mut turn = 0;
                let mut client =
                    ChatServiceClient::new(this.channels[i % this.channels.len()].clone());
                // Users arrive spread over one answer's time, not all in one instant
                // (that is the burst case, measured on its own).
                tokio::time::sleep(ANSWER_TIME * i as u32 / conc as u32).await;
                while t0.elapsed() < STEADY_PHASE {
                    let begun = t0.elapsed();
                    let sample = match &conversations {
                        Some(ids) => {
                            let cid = &ids[turn.min(ids.len() - 1)];
                            turn += 1;
                            through_chat(&mut client, &this.users[i], cid, "paced").await
                        }
                        None => direct(&this.http, &this.url, "paced").await,
                    };
                    // The ramp (the first answer's time) is not steady state yet.
                    if begun >= ANSWER_TIME {
                        out.push(sample);
                    }
                }
                out
            })
        });
        let samples: Vec<Sample> = futures::future::join_all(workers)
            .await
            .into_iter()
            .flat_map(Result::unwrap)
            .collect();
        let wall = t0.elapsed().as_secs_f64();
        let rate = samples.iter().map(|s| s.tokens).sum::<usize>() as f64 / wall;
        // Cores busy on average (this process: chat, its services, the fake upstream, clients).
        let cores = (cpu_seconds() - cpu0) / wall;
        (samples, rate, cores)
    }

    /// `conc` requests sent at once (unpaced upstream).
    async fn burst(self: &Arc<Self>, conc: usize, chat: Option<&[Vec<String>]>) -> Vec<Sample> {
        let batch = (0..conc).map(|i| {
            let this = self.clone();
            let conversation = chat.map(|c| c[i][0].clone());
            tokio::spawn(async move {
                match conversation {
                    Some(cid) => {
                        let mut client =
                            ChatServiceClient::new(this.channels[i % this.channels.len()].clone());
                        through_chat(&mut client, &this.users[i], &cid, "tokens").await
                    }
                    None => direct(&this.http, &this.url, "tokens").await,
                }
            })
        });
        futures::future::join_all(batch)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    async fn conversations(&self, conc: usize, per_user: usize) -> Vec<Vec<String>> {
        seed_conversations(&self.store, &self.users[..conc], per_user).await
    }
}

/// CPU time this process has used (user + system), from /proc; 0 where there is none.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Row {
    d50: f64,
    d99: f64,
    c50: f64,
    c99: f64,
    n: usize,
}

impl Row {
    fn new(direct: &[Sample], chat: &[Sample]) -> Self {
        let mut d: Vec<Duration> = direct.iter().map(|s| s.ttft).collect();
        let mut c: Vec<Duration> = chat.iter().map(|s| s.ttft).collect();
        Self {
            d50: ms(pct(&mut d, 0.5)),
            d99: ms(pct(&mut d, 0.99)),
            c50: ms(pct(&mut c, 0.5)),
            c99: ms(pct(&mut c, 0.99)),
            n: c.len(),
        }
    }

    fn print(&self, conc: usize, rates: Option<(f64, f64)>) {
        let rates = rates
            .map(|(d, c)| format!(" | {d:>9.0} {c:>10.0}"))
            .unwrap_or_default();
        println!(
            "{conc:>5} {:>6} | {:>7.2}ms {:>7.2}ms | {:>7.2}ms {:>7.2}ms | {:>8.2}ms {:>8.2}ms{rates}",
            self.n,
            self.d50,
            self.d99,
            self.c50,
            self.c99,
            self.c50 - self.d50,
            self.c99 - self.d99,
        );
    }
}

fn header(rates: bool) {
    println!(
        "{:>5} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>10} {:>10}{}",
        "conc",
        "n",
        "direct50",
        "direct99",
        "chat50",
        "chat99",
        "added p50",
        "added p99",
        if rates {
            format!(" | {:>9} {:>10}", "tok/s dir", "tok/s chat")
        } else {
            String::new()
        }
    );
}

#[tokio::main]
async fn main() {
    let up = upstream::FakeUpstream::start().await;
    let dir = tempfile::tempdir_in(
        std::env::var("BENCH_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().to_string_lossy().into_owned()),
    )
    .expect("temp dir");
    let conversation = in_process(
        confab_conversation::server(confab_conversation::Config::sqlite(dir.path()))
            .await
            .expect("conversation store"),
    );
    let files = in_process(
        confab_files::server(confab_files::Config::local(dir.path().join("files")))
            .await
            .expect("file service"),
    );
    // Generous limits: every stream is admitted, but each one still takes the real
    // decision, lease and token reservation.
    let limits = confab_ratelimit::Config {
        limits: confab_ratelimit::Limits {
            requests_per_minute: 1_000_000,
            max_streams: 1_000,
            daily_tokens: u64::MAX / 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let deps = ChatDeps {
        conversation: conversation.clone(),
        files,
        ratelimit: in_process(
            confab_ratelimit::server(limits)
                .await
                .expect("rate limiter"),
        ),
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
    let bench = Arc::new(Bench {
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .unwrap(),
        url: format!("{}/chat/completions", up.base_url()),
        channels,
        users: (0..LEVELS[2])
            .map(|i| Identity::user(format!("bench-user-{i}")))
            .collect(),
        store: ConversationServiceClient::new(conversation),
    });
    // BENCH_CHAT_CONC=100 runs one level (for profiling).
    let levels: Vec<usize> = match std::env::var("BENCH_CHAT_CONC") {
        Ok(v) => v
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .filter(|&c| (1..=LEVELS[2]).contains(&c))
            .collect(),
        Err(_) => LEVELS.to_vec(),
    };
    // Warm-up: tokenizer tables, connections, SQLite caches.
    let warm = bench.conversations(1, 1).await;
    let _ = bench.burst(1, Some(&warm)).await;
    let _ = bench.burst(1, None).await;

    println!(
        "bench-chat: real services in-process, {HISTORY_EXCHANGES} earlier exchanges per conversation, fake upstream on loopback"
    );
    println!(
        "steady: each stream 50 tokens at 100 tokens/s, a new question as soon as an answer ends ({STEADY_PHASES}×{}s per path)",
        STEADY_PHASE.as_secs()
    );
    header(true);
    let mut verdict = None;
    for &conc in &levels {
        // Enough conversations for every turn of every phase (a turn takes a little
        // more than one answer's time).
        let per_phase = (STEADY_PHASE.as_millis() / ANSWER_TIME.as_millis()) as usize + 1;
        let convs = bench.conversations(conc, STEADY_PHASES * per_phase).await;
        let (mut d, mut c) = (vec![], vec![]);
        let (mut d_rate, mut c_rate, mut d_cpu, mut c_cpu) = (0.0, 0.0, 0.0, 0.0);
        // Direct and through-chat phases alternate so both see the same machine.
        let share = 1.0 / STEADY_PHASES as f64;
        for phase in 0..STEADY_PHASES {
            let (s, r, cpu) = bench.steady(conc, None).await;
            d.extend(s);
            d_rate += r * share;
            d_cpu += cpu * share;
            let fresh: Vec<Vec<String>> = convs
                .iter()
                .map(|ids| ids[phase * per_phase..].to_vec())
                .collect();
            let (s, r, cpu) = bench.steady(conc, Some(&fresh)).await;
            c.extend(s);
            c_rate += r * share;
            c_cpu += cpu * share;
        }
        let row = Row::new(&d, &c);
        row.print(conc, Some((d_rate, c_rate)));
        println!(
            "{:>12} cores busy: {d_cpu:.2} direct, {c_cpu:.2} through chat (of {})",
            "",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        if conc == LEVELS[2] {
            verdict = Some(row.c99 - row.d99);
        }
    }
    println!(
        "burst: all streams sent in the same instant, 50 tokens as fast as the upstream can ({BURST_ROUNDS} rounds)"
    );
    header(false);
    for &conc in &levels {
        let (mut d, mut c) = (vec![], vec![]);
        for _ in 0..BURST_ROUNDS {
            let convs = bench.conversations(conc, 1).await;
            d.extend(bench.burst(conc, None).await);
            c.extend(bench.burst(conc, Some(&convs)).await);
        }
        Row::new(&d, &c).print(conc, None);
    }
    if let Some(a) = verdict {
        println!(
            "target p99 added TTFT < 5 ms at {} concurrent streams (steady): {:.2} ms → {}",
            LEVELS[2],
            a,
            if a < 5.0 { "MET" } else { "NOT MET" }
        );
    }
    println!("upstream streams dropped early: {}", up.dropped());
}
