//! `make bench-conversation`: seeds 10,000 conversations / 100,000 messages for one user
//! among other users, on SQLite and on MongoDB (the MongoDB-wire test server, or
//! `MONGODB_URI` when set), then prints list and search p50/p95 and, in the same run,
//! the same searches done as a naive scan (SQL `LIKE` / Mongo `$regex` over the user's
//! messages, ranked in Rust) as a baseline ratio. Bounded: ~3 minutes on 2 cores.
//!
//! First, on SQLite through the in-process gRPC server (as chat calls it): the store
//! work of a chat turn before its `Started` event (get conversation, history page,
//! append the user message, append the streaming answer), at 1, 10 and 100 concurrent
//! turns, p50/p99; also for new conversations (create + two appends).
//! `CONFAB_BENCH_TURNS_ONLY=1` stops after that part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_common::Identity;
use confab_conversation::model::new_id;
use confab_conversation::store::ImportItem;
use confab_conversation::{Config, ConversationStore, Conversations, open_store, search};
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::conversation::v1::{
    AppendMessageRequest, Conversation, CreateConversationRequest, GetConversationRequest,
    ListConversationsRequest, ListMessagesRequest, Message, MessageStatus, Role,
    UpdateMessageRequest,
};

const USER: &str = "bench-user";
const CONVERSATIONS: usize = 10_000;
const MESSAGES_PER: usize = 10;
const OTHER_USERS: usize = 20;
const OTHER_CONVERSATIONS: usize = 100;
const OTHER_MESSAGES_PER: usize = 5;
const WORDS_PER_MESSAGE: usize = 24;
const VOCABULARY: usize = 5_000;
const LIST_SAMPLES: usize = 200;
const SEARCH_SAMPLES: usize = 100;
const NAIVE_SAMPLES: usize = 10;
/// Each measurement stops early after this long (at least 5 samples), keeping the run
/// bounded on the slow (Python) MongoDB-wire test server.
const BUDGET: Duration = Duration::from_secs(8);

/// Deterministic xorshift so every run seeds the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Zipf-like: small indexes much more likely (common words).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64).powf(u) as usize).saturating_sub(1).min(n - 1)
    }
}

fn vocabulary() -> Vec<String> {
    const SYL: &[&str] = &[
        "ka", "to", "ri", "mu", "sen", "lo", "va", "pe", "dor", "qui", "zan", "bel", "tra", "fi",
        "gon", "hu",
    ];
    (0..VOCABULARY)
        .map(|i| {
            let mut w = String::new();
            let mut n = i + 17;
            for _ in 0..3 {
                w.push_str(SYL[n % SYL.len()]);
                n /= SYL.len();
            }
            format!("{w}{}", i / 4096)
        })
        .collect()
}

fn sentence(rng: &mut Rng, vocab: &[String], words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&vocab[rng.zipf(vocab.len())]);
    }
    s.push('.');
    s
}

fn items(rng: &mut Rng, vocab: &[String], convs: usize, msgs: usize, t0: i64) -> Vec<ImportItem> {
    (0..convs)
        .map(|i| {
            let created = t0 + (i as i64) * 1000;
            let id = new_id();
            let messages: Vec<Message> = (0..msgs)
                .map(|j| Message {
                    id: new_id(),
                    conversation_id: id.clone(),
                    role: if j % 2 == 0 {
                        Role::User
                    } else {
                        Role::Assistant
                    } as i32,
                    content: sentence(rng, vocab, WORDS_PER_MESSAGE),
                    status: MessageStatus::Complete as i32,
                    created_at_ms: created + j as i64,
                    updated_at_ms: created + j as i64,
                    ..Default::default()
                })
                .collect();
            ImportItem {
                conversation: Conversation {
                    id,
                    title: sentence(rng, vocab, 4),
                    created_at_ms: created,
                    updated_at_ms: created + msgs as i64,
                    message_count: msgs as u32,
                    title_set: true,
                    ..Default::default()
                },
                messages,
            }
        })
        .collect()
}

async fn seed(store: &Arc<dyn ConversationStore>, vocab: &[String]) -> Duration {
    let start = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = 1_700_000_000_000;
    for batch in 0..CONVERSATIONS / 500 {
        let it = items(
            &mut rng,
            vocab,
            500,
            MESSAGES_PER,
            t0 + batch as i64 * 500_000,
        );
        store.import(USER, it).await.expect("seed");
    }
    for u in 0..OTHER_USERS {
        let it = items(&mut rng, vocab, OTHER_CONVERSATIONS, OTHER_MESSAGES_PER, t0);
        store
            .import(&format!("other-{u}"), it)
            .await
            .expect("seed others");
    }
    start.elapsed()
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

struct Figures {
    list: (f64, f64),
    search: (f64, f64),
    naive: (f64, f64),
}

/// Queries: one mid-frequency word, one rarer word, two words together.
fn queries(vocab: &[String], rng: &mut Rng) -> Vec<String> {
    (0..SEARCH_SAMPLES)
        .map(|i| match i % 3 {
            0 => vocab[20 + rng.below(80)].clone(),
            1 => vocab[300 + rng.below(2000)].clone(),
            _ => format!(
                "{} {}",
                vocab[10 + rng.below(100)],
                vocab[10 + rng.below(100)]
            ),
        })
        .collect()
}

async fn measure(
    svc: &Conversations,
    vocab: &[String],
    naive: impl AsyncFn(&[String]) -> usize,
) -> Figures {
    let user = Identity::user(USER);
    // Listing: the first page and pages deeper in the history, by following tokens.
    let mut list = Vec::new();
    let mut token = String::new();
    let started = Instant::now();
    for _ in 0..LIST_SAMPLES {
        if list.len() >= 5 && started.elapsed() > BUDGET {
            break;
        }
        let t = Instant::now();
        let r = svc
            .list_conversations(
                &user,
                ListConversationsRequest {
                    page_size: 20,
                    page_token: token.clone(),
                    pinned_first: false,
                },
            )
            .await
            .expect("list");
        list.push(t.elapsed());
        assert_eq!(r.conversations.len(), 20);
        token = r.next_page_token;
    }
    let mut rng = Rng(42);
    let qs = queries(vocab, &mut rng);
    let mut hits_total = 0;
    let mut search_t = Vec::new();
    let started = Instant::now();
    for q in &qs {
        if search_t.len() >= 5 && started.elapsed() > BUDGET {
            break;
        }
        let t = Instant::now();
        let r = svc.search(&user, q, 20).await.expect("search");
        search_t.push(t.elapsed());
        hits_total += r.hits.len();
    }
    assert!(hits_total > 0, "searches found nothing");
    let mut naive_t = Vec::new();
    let started = Instant::now();
    for q in qs.iter().take(NAIVE_SAMPLES) {
        if !naive_t.is_empty() && started.elapsed() > BUDGET {
            break;
        }
        let terms = search::parse_query(q).unwrap();
        let t = Instant::now();
        naive(&terms).await;
        naive_t.push(t.elapsed());
    }
    println!(
        "  samples: list {}, search {}, naive {}",
        list.len(),
        search_t.len(),
        naive_t.len()
    );
    Figures {
        list: (pct(&mut list, 0.5), pct(&mut list, 0.95)),
        search: (pct(&mut search_t, 0.5), pct(&mut search_t, 0.95)),
        naive: (pct(&mut naive_t, 0.5), pct(&mut naive_t, 0.95)),
    }
}

/// Rank in Rust what a scan found (the same work a store without an index does).
fn rank(rows: Vec<(String, String)>, terms: &[String]) -> usize {
    let mut best = std::collections::HashMap::<String, f64>::new();
    for (cid, content) in rows {
        if search::matches_all(&content, terms) {
            let s = search::score(&content, terms, WORDS_PER_MESSAGE as f64);
            let e = best.entry(cid).or_insert(0.0);
            *e = e.max(s);
        }
    }
    let mut v: Vec<f64> = best.into_values().collect();
    v.sort_by(|a, b| b.total_cmp(a));
    v.len().min(20)
}

fn report(backend: &str, seed: Duration, f: &Figures) {
    println!(
        "{backend:8} seed {:>6.1} s | list p50 {:>6.2} ms p95 {:>6.2} ms | search p50 {:>6.2} ms p95 {:>6.2} ms | naive scan p50 {:>8.1} ms p95 {:>8.1} ms | naive/indexed p50 {:>6.0}x",
        seed.as_secs_f64(),
        f.list.0,
        f.list.1,
        f.search.0,
        f.search.1,
        f.naive.0,
        f.naive.1,
        f.naive.0 / f.search.0.max(0.001)
    );
}

/// The conversation calls of one chat turn up to `Started`; the answer's final update
/// follows (outside the measurement, as it is after the first token).
async fn turn(
    mut client: ConversationServiceClient<confab_common::GrpcChannel>,
    user: Identity,
    conversation_id: Option<String>,
) -> Duration {
    let t = Instant::now();
    let cid = match conversation_id {
        Some(cid) => {
            client
                .get_conversation(user.request(GetConversationRequest {
                    conversation_id: cid.clone(),
                }))
                .await
                .expect("get");
            client
                .list_messages(user.request(ListMessagesRequest {
                    conversation_id: cid.clone(),
                    page_size: 200,
                    newest_first: true,
                    ..Default::default()
                }))
                .await
                .expect("history");
            cid
        }
        None => {
            client
                .create_conversation(user.request(CreateConversationRequest::default()))
                .await
                .expect("create")
                .into_inner()
                .id
        }
    };
    let asked = client
        .append_message(user.request(AppendMessageRequest {
            conversation_id: cid.clone(),
            role: Role::User as i32,
            content: "What does the benchmark measure, in a few words?".into(),
            status: MessageStatus::Complete as i32,
            ..Default::default()
        }))
        .await
        .expect("append user")
        .into_inner();
    let answer = client
        .append_message(user.request(AppendMessageRequest {
            conversation_id: cid.clone(),
            role: Role::Assistant as i32,
            status: MessageStatus::Streaming as i32,
            model: "gpt-4o".into(),
            parent_id: asked.id,
            generation_id: new_id(),
            ..Default::default()
        }))
        .await
        .expect("append answer")
        .into_inner();
    let started = t.elapsed();
    client
        .update_message(user.request(UpdateMessageRequest {
            conversation_id: cid,
            message_id: answer.id,
            content: Some("The store work of a chat turn.".into()),
            status: Some(MessageStatus::Complete as i32),
            ..Default::default()
        }))
        .await
        .expect("update answer");
    started
}

/// Chat-turn store latency on SQLite at 1, 10 and 100 concurrent turns.
async fn turns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let channel = confab_common::channel::in_process(
        confab_conversation::server(Config::sqlite(dir.path())).await?,
    );
    let client = ConversationServiceClient::new(channel);
    println!("sqlite chat turn (in-process gRPC), store work before Started:");
    for &conc in &[1usize, 10, 100] {
        let rounds = match conc {
            1 => 300,
            10 => 60,
            _ => 15,
        };
        // One user and conversation per stream, with some history (10 messages).
        let mut convs = Vec::new();
        for i in 0..conc {
            let user = Identity::user(format!("turn-user-{conc}-{i}"));
            let cid = client
                .clone()
                .create_conversation(user.request(CreateConversationRequest::default()))
                .await?
                .into_inner()
                .id;
            for j in 0..10 {
                client
                    .clone()
                    .append_message(user.request(AppendMessageRequest {
                        conversation_id: cid.clone(),
                        role: if j % 2 == 0 {
                            Role::User
                        } else {
                            Role::Assistant
                        } as i32,
                        content: format!("history message {j} with a few words in it"),
                        ..Default::default()
                    }))
                    .await?;
            }
            convs.push((user, cid));
        }
        for new in [false, true] {
            let mut samples = Vec::new();
            let started = Instant::now();
            for _ in 0..rounds {
                if samples.len() >= 5 && started.elapsed() > BUDGET {
                    break;
                }
                let batch = futures::future::join_all(convs.iter().map(|(user, cid)| {
                    let cid = (!new).then(|| cid.clone());
                    tokio::spawn(turn(client.clone(), user.clone(), cid))
                }))
                .await;
                samples.extend(batch.into_iter().map(Result::unwrap));
            }
            println!(
                "  {conc:>3} concurrent, {:<22} n {:>5} | p50 {:>6.2} ms p99 {:>6.2} ms",
                if new {
                    "new conversation"
                } else {
                    "existing (10 messages)"
                },
                samples.len(),
                pct(&mut samples, 0.5),
                pct(&mut samples, 0.99),
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    turns().await?;
    if std::env::var("CONFAB_BENCH_TURNS_ONLY").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let vocab = vocabulary();
    println!(
        "seeding {CONVERSATIONS} conversations / {} messages for one user among {OTHER_USERS} others ({} conversations / {} messages)",
        CONVERSATIONS * MESSAGES_PER,
        OTHER_USERS * OTHER_CONVERSATIONS,
        OTHER_USERS * OTHER_CONVERSATIONS * OTHER_MESSAGES_PER
    );

    // SQLite
    let dir = tempfile::tempdir()?;
    let store = open_store(&Config::sqlite(dir.path())).await?;
    let seed_t = seed(&store, &vocab).await;
    let svc = Conversations::new(store, None);
    let db = dir.path().join("conversation.db");
    let figures = measure(&svc, &vocab, async |terms: &[String]| {
        let db = db.clone();
        let terms = terms.to_vec();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let mut stmt = conn
                .prepare("SELECT conversation_id, content FROM messages WHERE owner = ?1 AND superseded = 0 AND content LIKE ?2")
                .unwrap();
            let rows: Vec<(String, String)> = stmt
                .query_map(rusqlite::params![USER, format!("%{}%", terms[0])], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rank(rows, &terms)
        })
        .await
        .unwrap()
    })
    .await;
    report("sqlite", seed_t, &figures);

    // MongoDB
    let uri = match std::env::var("MONGODB_URI") {
        Ok(u) if !u.is_empty() => u,
        _ => confab_common::testing::MongoServer::shared().await.uri(),
    };
    let db_name = confab_common::testing::unique_name("bench");
    let store = open_store(&Config::mongo(&uri, &db_name)).await?;
    eprintln!("sqlite done; seeding MongoDB at {uri} (the test server is slow to write)");
    let seed_t = seed(&store, &vocab).await;
    let svc = Conversations::new(store, None);
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let messages = client
        .database(&db_name)
        .collection::<mongodb::bson::Document>("messages");
    let figures = measure(&svc, &vocab, async |terms: &[String]| {
        use futures::TryStreamExt;
        let docs: Vec<mongodb::bson::Document> = messages
            .find(mongodb::bson::doc! {"owner": USER, "superseded": false, "content": {"$regex": &terms[0], "$options": "i"}})
            .projection(mongodb::bson::doc! {"conversation_id": 1, "content": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let rows = docs
            .iter()
            .map(|d| (d.get_str("conversation_id").unwrap_or_default().to_owned(), d.get_str("content").unwrap_or_default().to_owned()))
            .collect();
        rank(rows, terms)
    })
    .await;
    report("mongodb", seed_t, &figures);
    let _ = client.database(&db_name).drop().await;
    Ok(())
}
