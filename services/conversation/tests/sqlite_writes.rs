//! The SQLite write path under concurrency: group commit must not lose, reorder or
//! leak writes, and one failing write must not take its batch down with it.

use std::collections::HashSet;

use confab_common::Identity;
use confab_conversation::store::ImportItem;
use confab_conversation::{Config, Conversations, open_store};
use confab_proto::conversation::v1::*;

async fn svc() -> (Conversations, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&Config::sqlite(dir.path())).await.unwrap();
    (Conversations::new(store, None), dir)
}

async fn create(svc: &Conversations, u: &Identity) -> String {
    svc.create_conversation(u, CreateConversationRequest::default())
        .await
        .unwrap()
        .id
}

fn append_req(cid: &str, content: String) -> AppendMessageRequest {
    AppendMessageRequest {
        conversation_id: cid.into(),
        role: Role::User as i32,
        content,
        status: MessageStatus::Complete as i32,
        ..Default::default()
    }
}

async fn listed(svc: &Conversations, u: &Identity, cid: &str) -> Vec<Message> {
    svc.list_messages(
        u,
        ListMessagesRequest {
            conversation_id: cid.into(),
            page_size: 200,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_appends_all_land_in_order() {
    let (svc, _dir) = svc().await;
    let svc = std::sync::Arc::new(svc);
    let u = Identity::user("writer");
    let mut convs = Vec::new();
    for _ in 0..4 {
        convs.push(create(&svc, &u).await);
    }
    // 200 appends at once over 4 conversations.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (svc, u, cid) = (svc.clone(), u.clone(), convs[i % 4].clone());
            tokio::spawn(async move {
                svc.append_message(&u, append_req(&cid, format!("burst{i} message")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap());
    }
    for cid in &convs {
        let got = listed(&svc, &u, cid).await;
        assert_eq!(got.len(), 50, "every append of {cid} is stored");
        let ids: HashSet<_> = got.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), 50);
        for m in written.iter().filter(|m| &m.conversation_id == cid) {
            assert!(
                ids.contains(m.id.as_str()),
                "{} was answered but not stored",
                m.id
            );
        }
        let c = svc.get_conversation(&u, cid).await.unwrap();
        assert_eq!(c.message_count, 50);
    }
    // Each one is searchable (indexed in the same transaction).
    let hits = svc.search(&u, "burst137", 20).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].conversation.as_ref().unwrap().id, convs[137 % 4]);

    // Chains in order per conversation, 10 conversations concurrently: positions follow
    // the order each conversation's writes were made.
    let mut chains = Vec::new();
    for _ in 0..10 {
        chains.push(create(&svc, &u).await);
    }
    let tasks: Vec<_> = chains
        .iter()
        .map(|cid| {
            let (svc, u, cid) = (svc.clone(), u.clone(), cid.clone());
            tokio::spawn(async move {
                for j in 0..20 {
                    svc.append_message(&u, append_req(&cid, format!("step {j}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for cid in &chains {
        let got: Vec<String> = listed(&svc, &u, cid)
            .await
            .into_iter()
            .map(|m| m.content)
            .collect();
        let want: Vec<String> = (0..20).map(|j| format!("step {j}")).collect();
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_write_is_rolled_back_alone() {
    let (svc, _dir) = svc().await;
    let svc = std::sync::Arc::new(svc);
    let u = Identity::user("writer");
    let cid = create(&svc, &u).await;
    // An import that fails half-way (two messages with one id) among good appends.
    let bad_id = "0190a8e4-0000-7000-8000-000000000001".to_owned();
    let dup = Message {
        id: bad_id.clone(),
        conversation_id: "0190a8e4-0000-7000-8000-0000000000cc".into(),
        role: Role::User as i32,
        content: "duplicate".into(),
        ..Default::default()
    };
    let bad = ImportItem {
        conversation: Conversation {
            id: "0190a8e4-0000-7000-8000-0000000000cc".into(),
            title: "half imported".into(),
            ..Default::default()
        },
        messages: vec![dup.clone(), dup],
    };
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (s, user, c) = (svc.clone(), u.clone(), cid.clone());
        tasks.push(tokio::spawn(async move {
            s.append_message(&user, append_req(&c, format!("good {i}")))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
        if i == 30 {
            let (svc, u, bad) = (svc.clone(), u.clone(), bad.clone());
            tasks.push(tokio::spawn(async move {
                match svc.store().import(&u.user_id, vec![bad]).await {
                    Ok(()) => Err("the duplicate import succeeded".to_owned()),
                    Err(_) => Ok(()),
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(listed(&svc, &u, &cid).await.len(), 60);
    assert!(
        svc.store()
            .get_conversation(&u.user_id, "0190a8e4-0000-7000-8000-0000000000cc")
            .await
            .unwrap()
            .is_none(),
        "the failed import left its conversation behind"
    );
    assert!(
        svc.search(&u, "imported", 20)
            .await
            .unwrap()
            .hits
            .is_empty()
    );
}
