//! The generation registry's contract, run against both implementations: the in-process
//! one (both "replicas" are the same registry) and the Redis one (two registries, as two
//! replicas would be, on a real redis-server this test starts). Redis-only behaviour
//! (dead owners, Redis restarts) is in `shared.rs`.

mod shared;

use std::sync::Arc;
use std::time::Duration;

use confab_chat::registry::{
    GenerationInfo, GenerationRegistry, LocalRegistry, Orphan, OrphanHandler, RedisOptions,
    RedisRegistry, RegistryError,
};
use confab_common::testing::{RedisServer, unique_name};
use confab_proto::chat::v1::{self as chat, ChatEvent, chat_event::Event};
use futures::StreamExt;
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Local,
    Redis,
}

#[derive(Clone)]
pub struct Limits {
    pub max_detached: usize,
    pub ttl: Duration,
    pub max_events: usize,
    pub lease: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_detached: 3,
            ttl: Duration::from_secs(600),
            max_events: 8192,
            lease: Duration::from_secs(9),
        }
    }
}

/// Records the answers handed over as interrupted.
#[derive(Default)]
pub struct Orphans(pub Mutex<Vec<Orphan>>);

#[async_trait::async_trait]
impl OrphanHandler for Orphans {
    async fn interrupted(&self, orphan: &Orphan) -> Result<(), String> {
        self.0.lock().push(orphan.clone());
        Ok(())
    }
}

/// Two replicas' registries (the same one for the in-process kind).
pub struct Pair {
    pub a: Arc<dyn GenerationRegistry>,
    pub b: Arc<dyn GenerationRegistry>,
    pub redis_a: Option<Arc<RedisRegistry>>,
    pub orphans: Arc<Orphans>,
    pub server: Option<RedisServer>,
}

impl Pair {
    pub async fn new(kind: Kind, limits: Limits) -> Self {
        let orphans = Arc::new(Orphans::default());
        match kind {
            Kind::Local => {
                let r: Arc<dyn GenerationRegistry> = Arc::new(LocalRegistry::with_limits(
                    limits.max_detached,
                    limits.ttl,
                    limits.max_events,
                ));
                Self {
                    a: r.clone(),
                    b: r,
                    redis_a: None,
                    orphans,
                    server: None,
                }
            }
            Kind::Redis => {
                let server = RedisServer::start().await;
                let opts = RedisOptions {
                    prefix: format!("{}:", unique_name("reg")),
                    lease: limits.lease,
                    finished_ttl: limits.ttl,
                    max_events: limits.max_events,
                    max_followers: 64,
                };
                let connect = || {
                    RedisRegistry::connect(
                        &server.url(),
                        limits.max_detached,
                        opts.clone(),
                        orphans.clone(),
                    )
                    .unwrap()
                };
                let a = connect();
                let b = connect();
                Self {
                    a: a.clone(),
                    b,
                    redis_a: Some(a),
                    orphans,
                    server: Some(server),
                }
            }
        }
    }
}

pub fn info(id: &str, owner: &str) -> GenerationInfo {
    GenerationInfo {
        id: id.to_owned(),
        owner: owner.to_owned(),
        anonymous: false,
        conversation_id: "c1".to_owned(),
        assistant_message_id: format!("m-{id}"),
        detached: true,
    }
}

pub fn ev(event: Event) -> ChatEvent {
    ChatEvent {
        event: Some(event),
        ..Default::default()
    }
}

pub fn started() -> ChatEvent {
    ev(Event::Started(chat::Started::default()))
}

pub fn delta(text: &str) -> ChatEvent {
    ev(Event::Delta(chat::TokenDelta { text: text.into() }))
}

pub fn completed() -> ChatEvent {
    ev(Event::Completed(chat::Completed::default()))
}

pub fn text_of(events: &[ChatEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Delta(d)) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

/// Everything a stream yields until it ends (bounded by [`WAIT`]).
pub async fn collect(s: confab_chat::registry::EventStream) -> Vec<ChatEvent> {
    tokio::time::timeout(WAIT, s.collect::<Vec<_>>())
        .await
        .expect("the stream ends")
}

pub fn seqs(events: &[ChatEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

fn err_of(r: Result<confab_chat::registry::EventStream, RegistryError>) -> RegistryError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

// ---- the contract ------------------------------------------------------------------

async fn attach_replays_from_any_sequence_and_follows_live_events(kind: Kind) {
    let p = Pair::new(kind, Limits::default()).await;
    let g = p.a.begin(info("g1", "alice"));
    g.publish(started());
    for t in ["Hel", "lo", " wor"] {
        g.publish(delta(t));
    }
    // From sequence 2 on the other replica: 3, 4, then live ones.
    let mut from2 = p.b.attach("g1", "alice", 2).await.unwrap();
    assert_eq!(from2.next().await.unwrap().sequence, 3);
    assert_eq!(from2.next().await.unwrap().sequence, 4);
    let whole = p.b.attach("g1", "alice", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    g.publish(delta("ld"));
    g.publish(completed());
    p.a.end(&g);
    let rest = collect(from2).await;
    assert_eq!(seqs(&rest), vec![5, 6]);
    let whole = collect(whole).await;
    assert_eq!(seqs(&whole), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(text_of(&whole), "Hello world");
    assert!(
        whole
            .iter()
            .all(|e| e.generation_id == "g1" && e.conversation_id == "c1")
    );

    // Someone else's generation, or none: NOT_FOUND.
    assert!(matches!(
        err_of(p.b.attach("g1", "mallory", 0).await),
        RegistryError::NotFound(_)
    ));
    assert!(matches!(
        err_of(p.b.attach("nope", "alice", 0).await),
        RegistryError::NotFound(_)
    ));
}

async fn stop_on_any_replica_cancels_within_a_second(kind: Kind) {
    let p = Pair::new(kind, Limits::default()).await;
    let g = p.a.begin(info("g1", "alice"));
    g.publish(started());
    g.publish(delta("partial"));
    // The owner's run: ends with its last event once cancelled.
    let run = {
        let (g, a) = (g.clone(), p.a.clone());
        tokio::spawn(async move {
            g.cancel.cancelled().await;
            let at = tokio::time::Instant::now();
            g.publish(completed());
            a.end(&g);
            at
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        p.b.stop("g1", "mallory").await,
        Err(RegistryError::NotFound(_))
    ));
    let asked = tokio::time::Instant::now();
    assert!(p.b.stop("g1", "alice").await.unwrap(), "it was running");
    let cancelled_at = run.await.unwrap();
    let took = cancelled_at - asked;
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    // The stop call returned after the last event.
    assert!(g.is_finished());
    assert!(!p.b.stop("g1", "alice").await.unwrap(), "already finished");
    assert!(matches!(
        p.b.stop("nope", "alice").await,
        Err(RegistryError::NotFound(_))
    ));
}

async fn the_detached_cap_is_per_owner_across_replicas(kind: Kind) {
    let p = Pair::new(kind, Limits::default()).await;
    let s1 = p.a.detach_slot("alice").await.expect("first");
    let s2 = p.a.detach_slot("alice").await.expect("second");
    let s3 =
        p.b.detach_slot("alice")
            .await
            .expect("third, on the other replica");
    assert!(p.a.detach_slot("alice").await.is_none(), "cap reached");
    assert!(
        p.b.detach_slot("alice").await.is_none(),
        "cap reached everywhere"
    );
    let bob = p.b.detach_slot("bob").await.expect("others have their own");
    drop(s1);
    // Giving a slot back is asynchronous across replicas: it frees within moments.
    let mut again = None;
    for _ in 0..100 {
        again = p.b.detach_slot("alice").await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a returned slot can be taken again");
    drop((s2, s3, bob, again));
}

async fn finished_generations_stay_for_reattach_then_expire(kind: Kind) {
    let p = Pair::new(
        kind,
        Limits {
            ttl: Duration::from_secs(1),
            ..Limits::default()
        },
    )
    .await;
    let g = p.a.begin(info("g1", "alice"));
    g.publish(started());
    g.publish(delta("done"));
    g.publish(completed());
    p.a.end(&g);
    assert_eq!(p.a.running(), 0);
    // Let the mirror (if any) store the end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = collect(p.b.attach("g1", "alice", 0).await.unwrap()).await;
    assert_eq!(seqs(&all), vec![1, 2, 3]);
    let tail = collect(p.b.attach("g1", "alice", 3).await.unwrap()).await;
    assert!(
        tail.is_empty(),
        "nothing after the last event; the stream ends"
    );
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if matches!(
            p.b.attach("g1", "alice", 0).await,
            Err(RegistryError::NotFound(_))
        ) {
            gone = true;
            break;
        }
    }
    assert!(gone, "dropped after its time");
}

async fn replay_older_than_the_buffer_is_refused(kind: Kind) {
    let p = Pair::new(
        kind,
        Limits {
            max_events: 4,
            ..Limits::default()
        },
    )
    .await;
    let g = p.a.begin(info("g1", "alice"));
    // Redis trims approximately (whole nodes of ~100 entries): publish well past that.
    for i in 0..400 {
        g.publish(delta(&i.to_string()));
    }
    g.publish(completed());
    p.a.end(&g);
    tokio::time::sleep(Duration::from_millis(300)).await;
    match err_of(p.b.attach("g1", "alice", 0).await) {
        RegistryError::Gone { first } => assert!(first > 1, "first {first}"),
        e => panic!("expected Gone, got {e}"),
    }
    let tail = collect(p.b.attach("g1", "alice", 398).await.unwrap()).await;
    assert_eq!(seqs(&tail), vec![399, 400, 401]);
}

async fn drain_lets_answers_finish_and_interrupts_the_rest(kind: Kind) {
    let p = Pair::new(kind, Limits::default()).await;
    let quick = p.a.begin(info("quick", "alice"));
    let slow = p.a.begin(info("slow", "alice"));
    for g in [&quick, &slow] {
        g.publish(started());
        g.publish(delta("part"));
    }
    // A run that finishes on its own, and one that only ends when cancelled, storing
    // "interrupted" when the drain (not a user) cancelled it.
    let runs = [
        {
            let (g, a) = (quick.clone(), p.a.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                g.publish(completed());
                a.end(&g);
            })
        },
        {
            let (g, a) = (slow.clone(), p.a.clone());
            tokio::spawn(async move {
                g.cancel.cancelled().await;
                let last = if g.is_interrupted() {
                    ev(confab_chat::registry::interrupted_event("m-slow"))
                } else {
                    completed()
                };
                g.publish(last);
                a.end(&g);
            })
        },
    ];
    p.a.drain(Duration::from_millis(500)).await;
    for r in runs {
        r.await.unwrap();
    }
    assert!(!quick.is_interrupted(), "finished in time");
    assert!(slow.is_interrupted());
    assert_eq!(p.a.running(), 0);
    // Another replica sees the hand-over: a retryable Failed as the last event.
    let events = collect(p.b.attach("slow", "alice", 0).await.unwrap()).await;
    match events.last().and_then(|e| e.event.clone()) {
        Some(Event::Failed(f)) => {
            assert!(f.retryable);
            assert!(f.message.contains("interrupted"), "{}", f.message);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let events = collect(p.b.attach("quick", "alice", 0).await.unwrap()).await;
    assert!(matches!(
        events.last().and_then(|e| e.event.clone()),
        Some(Event::Completed(_))
    ));
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Local).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Redis).await })*
        }
    };
}

contract!(
    attach_replays_from_any_sequence_and_follows_live_events,
    stop_on_any_replica_cancels_within_a_second,
    the_detached_cap_is_per_owner_across_replicas,
    finished_generations_stay_for_reattach_then_expire,
    replay_older_than_the_buffer_is_refused,
    drain_lets_answers_finish_and_interrupts_the_rest,
);
