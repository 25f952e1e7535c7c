//! What only the shared registry does: hand over a dead owner's answers, and live
//! through Redis restarting mid-answer.

use std::time::Duration;

use confab_proto::chat::v1::chat_event::Event;
use futures::StreamExt;

use super::*;

/// The owner stops renewing (as after SIGKILL): another replica claims the lease once it
/// expires, its followers get a retryable Failed ("interrupted") and the stored answer is
/// handed over with the text streamed so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_answer_is_handed_over_as_interrupted() {
    let p = Pair::new(
        Kind::Redis,
        Limits {
            lease: Duration::from_millis(1500),
            ..Limits::default()
        },
    )
    .await;
    let g = p.a.begin(info("g1", "alice"));
    g.publish(started());
    g.publish(delta("Hel"));
    g.publish(delta("lo"));
    let follow = p.b.attach("g1", "alice", 0).await.unwrap();
    // It stays alive while the owner renews, well past one lease.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        p.orphans.0.lock().is_empty(),
        "a live owner keeps its lease"
    );

    let died = tokio::time::Instant::now();
    p.redis_a.as_ref().unwrap().play_dead();
    let events = collect(follow).await;
    let noticed = died.elapsed();
    assert_eq!(seqs(&events), vec![1, 2, 3, 4]);
    match &events[3].event {
        Some(Event::Failed(f)) => {
            assert!(f.retryable);
            assert!(f.message.contains("interrupted"), "{}", f.message);
            assert_eq!(f.assistant_message_id, "m-g1");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(
        noticed < Duration::from_secs(15),
        "noticed after {noticed:?}"
    );
    let orphans = p.orphans.0.lock().clone();
    assert_eq!(orphans.len(), 1, "claimed exactly once");
    assert_eq!(orphans[0].text.as_deref(), Some("Hello"));
    assert_eq!(orphans[0].info, info("g1", "alice"));
    eprintln!("dead owner noticed after {noticed:?} (lease 1.5 s)");

    // Re-attaching later still replays the whole thing, ending interrupted.
    let again = collect(p.b.attach("g1", "alice", 0).await.unwrap()).await;
    assert_eq!(seqs(&again), vec![1, 2, 3, 4]);
    assert!(
        !p.b.stop("g1", "alice").await.unwrap(),
        "nothing runs any more"
    );
}

/// Redis is killed and started again (empty) mid-answer: the owner's clients never
/// notice, the answer completes, and Attach on the other replica works again once Redis
/// is back, replaying from the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_mid_answer_loses_nothing_the_owner_buffers() {
    let mut p = Pair::new(Kind::Redis, Limits::default()).await;
    let g = p.a.begin(info("g1", "alice"));
    let primary = g.primary();
    g.publish(started());
    g.publish(delta("one "));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = collect_some(p.b.attach("g1", "alice", 0).await.unwrap(), 2).await;
    assert_eq!(seqs(&first), vec![1, 2]);

    let server = p.server.as_mut().unwrap();
    server.stop().await;
    g.publish(delta("two "));
    // Meanwhile: other replicas cannot reach it; the owner still streams.
    assert!(matches!(
        p.b.attach("g1", "alice", 0).await,
        Err(RegistryError::Unavailable(_))
    ));
    assert!(
        p.b.detach_slot("alice").await.is_some(),
        "the cap degrades to per-replica"
    );
    server.restart().await;
    g.publish(delta("three"));

    // Back: the owner re-creates the generation and re-sends what it buffers.
    let mut attached = None;
    for _ in 0..100 {
        if let Ok(s) = p.b.attach("g1", "alice", 0).await {
            attached = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut attached = attached.expect("Attach works again once Redis is back");
    for expect in 1..=4 {
        let e = tokio::time::timeout(WAIT, attached.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.sequence, expect);
    }
    g.publish(completed());
    p.a.end(&g);
    let rest = collect(attached).await;
    assert_eq!(seqs(&rest), vec![5]);
    let all = collect(Box::pin(primary)).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    assert_eq!(text_of(&all), "one two three");
    assert!(p.orphans.0.lock().is_empty(), "a restart is not a death");
}

/// Stop through a replica that does not run the generation, while the owner streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_attach_work_for_generations_started_elsewhere_only_by_their_owner() {
    let p = Pair::new(Kind::Redis, Limits::default()).await;
    let g = p.a.begin(info("g1", "alice"));
    g.publish(started());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        p.b.stop("g1", "bob").await,
        Err(RegistryError::NotFound(_))
    ));
    assert!(!g.cancel.is_cancelled(), "someone else's stop does nothing");
    drop(g);
}

async fn collect_some(
    mut s: confab_chat::registry::EventStream,
    n: usize,
) -> Vec<confab_proto::chat::v1::ChatEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(WAIT, s.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on");
        out.push(e);
    }
    out
}
