//! One contract suite, run against both stores: SQLite in a temp dir and MongoDB on the
//! MongoDB-wire test server (fresh database per test). Drives the domain service, so
//! validation, pagination tokens and search parsing are covered for both backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use confab_common::Identity;
use confab_common::testing::{MongoServer, unique_name};
use confab_conversation::clock::ManualClock;
use confab_conversation::error::ConversationError;
use confab_conversation::service::STALE_STREAMING_AFTER;
use confab_conversation::{Config, Conversations, open_store};
use confab_proto::conversation::v1::*;

struct Env {
    svc: Conversations,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite_env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&Config::sqlite(dir.path())).await.unwrap();
    Env {
        svc: Conversations::new(store, None),
        _dir: Some(dir),
    }
}

async fn mongo_env() -> Env {
    let server = MongoServer::shared().await;
    let store = open_store(&Config::mongo(server.uri(), unique_name("conv")))
        .await
        .unwrap();
    Env {
        svc: Conversations::new(store, None),
        _dir: None,
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let env = super::sqlite_env().await; super::$name(&env.svc).await; })*
        }
        mod mongo {
            $(#[tokio::test] async fn $name() { let env = super::mongo_env().await; super::$name(&env.svc).await; })*
        }
    };
}

contract!(
    create_get_update,
    list_pages_without_duplicates_or_gaps_while_writing,
    pinned_first_ordering,
    activity_moves_a_conversation_to_the_head,
    messages_append_list_get_update,
    message_pages_while_appending,
    supersede_hides_but_keeps,
    delete_removes_messages_and_reports_files,
    search_ranks_titles_and_messages_with_snippets,
    search_follows_updates_supersedes_and_deletes,
    isolation_on_every_operation,
    bad_input_is_invalid_argument,
    export_markdown_and_json,
    concurrent_appends_get_distinct_positions,
    search_survives_odd_queries_and_finds_unicode,
    search_finds_conversations_behind_a_crowded_one,
    orphaned_streaming_answers_read_as_interrupted,
);

fn alice() -> Identity {
    Identity::user(unique_name("alice"))
}

fn bob() -> Identity {
    Identity::user(unique_name("bob"))
}

async fn create(svc: &Conversations, u: &Identity, title: &str) -> Conversation {
    svc.create_conversation(
        u,
        CreateConversationRequest {
            title: title.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn append(
    svc: &Conversations,
    u: &Identity,
    cid: &str,
    role: Role,
    content: &str,
) -> Message {
    svc.append_message(
        u,
        AppendMessageRequest {
            conversation_id: cid.into(),
            role: role as i32,
            content: content.into(),
            status: MessageStatus::Complete as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn code(e: ConversationError) -> tonic::Code {
    tonic::Status::from(e).code()
}

async fn list_all(
    svc: &Conversations,
    u: &Identity,
    page: u32,
    pinned_first: bool,
) -> Vec<Conversation> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let r = svc
            .list_conversations(
                u,
                ListConversationsRequest {
                    page_size: page,
                    page_token: token,
                    pinned_first,
                },
            )
            .await
            .unwrap();
        assert!(r.conversations.len() <= page as usize);
        out.extend(r.conversations);
        if r.next_page_token.is_empty() {
            return out;
        }
        token = r.next_page_token;
    }
    panic!("pagination did not end");
}

async fn create_get_update(svc: &Conversations) {
    let a = alice();
    let c = svc
        .create_conversation(
            &a,
            CreateConversationRequest {
                title: "Trip plans".into(),
                model: "gpt-4o".into(),
                system_prompt: "Be brief.".into(),
            },
        )
        .await
        .unwrap();
    assert!(c.title_set);
    assert_eq!(c.message_count, 0);
    assert_eq!(svc.get_conversation(&a, &c.id).await.unwrap(), c);

    let untitled = create(svc, &a, "").await;
    assert!(!untitled.title_set);

    let u = svc
        .update_conversation(
            &a,
            UpdateConversationRequest {
                conversation_id: c.id.clone(),
                title: Some("Japan trip".into()),
                pinned: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.title, "Japan trip");
    assert!(u.pinned);
    assert_eq!(u.model, "gpt-4o");
    assert_eq!(u.system_prompt, "Be brief.");
    assert!(u.updated_at_ms >= c.updated_at_ms);
    assert_eq!(svc.get_conversation(&a, &c.id).await.unwrap(), u);

    // Pinning alone is not activity.
    let p = svc
        .update_conversation(
            &a,
            UpdateConversationRequest {
                conversation_id: c.id.clone(),
                pinned: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!p.pinned);
    assert_eq!(p.updated_at_ms, u.updated_at_ms);
    assert_eq!(p.title, "Japan trip");

    let unknown = confab_conversation::model::new_id();
    assert_eq!(
        code(svc.get_conversation(&a, &unknown).await.unwrap_err()),
        tonic::Code::NotFound
    );
}

async fn list_pages_without_duplicates_or_gaps_while_writing(svc: &Conversations) {
    let a = alice();
    let mut existing = HashSet::new();
    for i in 0..23 {
        existing.insert(create(svc, &a, &format!("conversation {i}")).await.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut created_during = HashSet::new();
    loop {
        let r = svc
            .list_conversations(
                &a,
                ListConversationsRequest {
                    page_size: 5,
                    page_token: token.clone(),
                    pinned_first: false,
                },
            )
            .await
            .unwrap();
        for w in r.conversations.windows(2) {
            assert!(
                (w[0].updated_at_ms, &w[0].id) > (w[1].updated_at_ms, &w[1].id),
                "ordered newest first"
            );
        }
        seen.extend(r.conversations.iter().map(|c| c.id.clone()));
        // Writes between page reads.
        created_during.insert(create(svc, &a, "written while paging").await.id);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    assert!(existing.is_subset(&unique), "no gaps");
    assert!(
        unique.is_disjoint(&created_during),
        "new conversations appear at the head only"
    );
    assert_eq!(
        list_all(svc, &a, 100, false).await.len(),
        23 + created_during.len()
    );
}

async fn pinned_first_ordering(svc: &Conversations) {
    let a = alice();
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(create(svc, &a, &format!("c{i}")).await.id);
    }
    for id in [&ids[1], &ids[4], &ids[7]] {
        svc.update_conversation(
            &a,
            UpdateConversationRequest {
                conversation_id: id.clone(),
                pinned: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let all = list_all(svc, &a, 2, true).await;
    assert_eq!(all.len(), 9);
    assert!(all[..3].iter().all(|c| c.pinned));
    assert!(all[3..].iter().all(|c| !c.pinned));
    let plain = list_all(svc, &a, 4, false).await;
    assert_eq!(plain.len(), 9);
    // A token from one ordering is refused by the other.
    let r = svc
        .list_conversations(
            &a,
            ListConversationsRequest {
                page_size: 2,
                page_token: String::new(),
                pinned_first: true,
            },
        )
        .await
        .unwrap();
    let err = svc
        .list_conversations(
            &a,
            ListConversationsRequest {
                page_size: 2,
                page_token: r.next_page_token,
                pinned_first: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), tonic::Code::InvalidArgument);
}

/// The same store, read and written by a service on a clock the test moves.
fn on_manual_clock(svc: &Conversations) -> (Conversations, ManualClock) {
    let clock = ManualClock::starting_now();
    let svc = Conversations::new(svc.store().clone(), None).with_clock(Arc::new(clock.clone()));
    (svc, clock)
}

async fn activity_moves_a_conversation_to_the_head(svc: &Conversations) {
    let (svc, clock) = on_manual_clock(svc);
    let svc = &svc;
    let a = alice();
    let old = create(svc, &a, "old").await;
    clock.advance(Duration::from_millis(5));
    let _new = create(svc, &a, "new").await;
    clock.advance(Duration::from_millis(5));
    append(svc, &a, &old.id, Role::User, "hello again").await;
    let list = list_all(svc, &a, 10, false).await;
    assert_eq!(list[0].id, old.id);
    assert_eq!(list[0].message_count, 1);
    assert!(list[0].updated_at_ms > old.updated_at_ms);
}

async fn messages_append_list_get_update(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "chat").await;
    let u = append(svc, &a, &c.id, Role::User, "What is Rust?").await;
    let asst = svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::Assistant as i32,
                status: MessageStatus::Streaming as i32,
                parent_id: u.id.clone(),
                model: "gpt-4o".into(),
                generation_id: "gen-1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(asst.status, MessageStatus::Streaming as i32);
    let usage = TokenUsage {
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
    };
    let plan = ContextPlan {
        model: "gpt-4o".into(),
        context_window: 128_000,
        notes: vec!["all history".into()],
        ..Default::default()
    };
    let done = svc
        .update_message(
            &a,
            UpdateMessageRequest {
                conversation_id: c.id.clone(),
                message_id: asst.id.clone(),
                content: Some("A systems language.".into()),
                status: Some(MessageStatus::Complete as i32),
                usage: Some(usage),
                context: Some(plan.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.content, "A systems language.");
    assert_eq!(done.usage, Some(usage));
    assert_eq!(done.context, Some(plan));
    assert_eq!(done.parent_id, u.id);
    assert_eq!(done.generation_id, "gen-1");
    assert_eq!(svc.get_message(&a, &c.id, &asst.id).await.unwrap(), done);

    let failed = svc
        .update_message(
            &a,
            UpdateMessageRequest {
                conversation_id: c.id.clone(),
                message_id: asst.id.clone(),
                status: Some(MessageStatus::Failed as i32),
                error_message: Some("upstream timed out".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.content, "A systems language.", "partial text kept");
    assert_eq!(failed.error_message, "upstream timed out");

    let r = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        r.messages.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [&u.id, &asst.id]
    );
    assert!(r.next_page_token.is_empty());
    assert!(r.messages[1].context.is_some());
    // The same page without context plans (what the chat service reads for history).
    let lean = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                omit_context: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(lean.messages.len(), 2);
    assert!(lean.messages.iter().all(|m| m.context.is_none()));
    assert_eq!(lean.messages[1].content, "A systems language.");
    assert_eq!(lean.messages[1].usage, Some(usage));
    assert_eq!(
        svc.get_conversation(&a, &c.id).await.unwrap().message_count,
        2
    );

    let unknown = confab_conversation::model::new_id();
    assert_eq!(
        code(svc.get_message(&a, &c.id, &unknown).await.unwrap_err()),
        tonic::Code::NotFound
    );
    let err = svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: unknown,
                role: Role::User as i32,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), tonic::Code::NotFound);
}

async fn message_pages_while_appending(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "long").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            append(svc, &a, &c.id, Role::User, &format!("m{i}"))
                .await
                .id,
        );
    }
    for newest_first in [false, true] {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut added = Vec::new();
        loop {
            let r = svc
                .list_messages(
                    &a,
                    ListMessagesRequest {
                        conversation_id: c.id.clone(),
                        page_size: 5,
                        page_token: token.clone(),
                        newest_first,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            seen.extend(r.messages.iter().map(|m| m.id.clone()));
            added.push(append(svc, &a, &c.id, Role::User, "late").await.id);
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        if newest_first {
            // Messages appended during the walk land before the cursor: never repeated.
            let expected: Vec<String> = ids.iter().rev().cloned().collect();
            assert_eq!(seen, expected);
        } else {
            // Oldest first: the walk reaches the messages appended during it.
            assert_eq!(&seen[..12], &ids[..]);
            let unique: HashSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len());
        }
        ids.extend(added);
    }
}

async fn supersede_hides_but_keeps(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "edit").await;
    let m1 = append(svc, &a, &c.id, Role::User, "first").await;
    let m2 = append(svc, &a, &c.id, Role::Assistant, "answer one").await;
    let m3 = append(svc, &a, &c.id, Role::User, "second").await;
    let m4 = append(svc, &a, &c.id, Role::Assistant, "answer two").await;

    let gone = svc
        .supersede_messages(
            &a,
            SupersedeMessagesRequest {
                conversation_id: c.id.clone(),
                from_message_id: m3.id.clone(),
                inclusive: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(gone, std::slice::from_ref(&m4.id));
    let gone = svc
        .supersede_messages(
            &a,
            SupersedeMessagesRequest {
                conversation_id: c.id.clone(),
                from_message_id: m2.id.clone(),
                inclusive: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        gone,
        [m2.id.clone(), m3.id.clone()],
        "already superseded ones are not repeated"
    );

    let visible = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        visible.messages.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [&m1.id]
    );
    let all = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                include_superseded: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.messages.len(), 4);
    assert!(all.messages[1..].iter().all(|m| m.superseded));
    assert!(svc.get_message(&a, &c.id, &m4.id).await.unwrap().superseded);
}

async fn delete_removes_messages_and_reports_files(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "with files").await;
    let att = |id: &str| Attachment {
        file_id: id.into(),
        filename: format!("{id}.pdf"),
        mime_type: "application/pdf".into(),
        size_bytes: 10,
        is_image: false,
    };
    for files in [
        vec![att("f1"), att("f2")],
        vec![],
        vec![att("f2"), att("f3")],
    ] {
        svc.append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::User as i32,
                content: "see attached".into(),
                attachments: files,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let listed = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.messages[0].attachments, vec![att("f1"), att("f2")]);
    let other = create(svc, &a, "kept").await;
    append(svc, &a, &other.id, Role::User, "see attached").await;

    let released = svc.delete_conversation(&a, &c.id).await.unwrap();
    assert_eq!(released, ["f1", "f2", "f3"]);
    assert_eq!(
        code(svc.get_conversation(&a, &c.id).await.unwrap_err()),
        tonic::Code::NotFound
    );
    let err = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), tonic::Code::NotFound);
    assert_eq!(
        code(svc.delete_conversation(&a, &c.id).await.unwrap_err()),
        tonic::Code::NotFound
    );
    let hits = svc.search(&a, "attached", 10).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].conversation.as_ref().unwrap().id, other.id);
}

async fn search_ranks_titles_and_messages_with_snippets(svc: &Conversations) {
    let a = alice();
    let title_hit = create(svc, &a, "Kubernetes networking notes").await;
    append(svc, &a, &title_hit.id, Role::User, "something unrelated").await;
    let strong = create(svc, &a, "strong").await;
    let strong_msg = append(
        svc,
        &a,
        &strong.id,
        Role::Assistant,
        "Kubernetes pods talk over the kubernetes network; kubernetes services route traffic.",
    )
    .await;
    append(
        svc,
        &a,
        &strong.id,
        Role::User,
        "kubernetes again in a second message",
    )
    .await;
    let weak = create(svc, &a, "weak").await;
    append(
        svc,
        &a,
        &weak.id,
        Role::User,
        "A very long message about many things: cooking, travel, music, books, films, gardening, and once kubernetes, then more words about weather and sports and history.",
    )
    .await;
    create(svc, &a, "nothing here").await;

    let hits = svc.search(&a, "Kubernetes", 10).await.unwrap().hits;
    let ids: Vec<&str> = hits
        .iter()
        .map(|h| h.conversation.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids.len(), 3, "one hit per conversation: {ids:?}");
    assert!(ids.contains(&title_hit.id.as_str()));
    assert!(ids.contains(&strong.id.as_str()));
    let pos = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    assert!(
        pos(&strong.id) < pos(&weak.id),
        "more matches rank higher: {hits:#?}"
    );
    for w in hits.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    for h in &hits {
        assert!(!h.highlights.is_empty(), "{h:?}");
        for hl in &h.highlights {
            let text = &h.snippet[hl.start as usize..hl.end as usize];
            assert_eq!(text.to_lowercase(), "kubernetes", "snippet {:?}", h.snippet);
        }
        assert!(h.snippet.contains('«') && h.snippet.contains('»'));
    }
    let t = hits
        .iter()
        .find(|h| h.conversation.as_ref().unwrap().id == title_hit.id)
        .unwrap();
    assert!(t.message_id.is_empty(), "title hit has no message id");
    let s = hits
        .iter()
        .find(|h| h.conversation.as_ref().unwrap().id == strong.id)
        .unwrap();
    assert_eq!(s.message_id, strong_msg.id);

    // Every word must match; case does not matter; page size bounds the hits.
    let both = svc.search(&a, "KUBERNETES traffic", 10).await.unwrap().hits;
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].message_id, strong_msg.id);
    assert_eq!(svc.search(&a, "kubernetes", 1).await.unwrap().hits.len(), 1);
    assert!(svc.search(&a, "zebra", 10).await.unwrap().hits.is_empty());
}

async fn search_follows_updates_supersedes_and_deletes(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "draft").await;
    let m = append(svc, &a, &c.id, Role::Assistant, "").await;
    assert!(
        svc.search(&a, "photosynthesis", 10)
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    svc.update_message(
        &a,
        UpdateMessageRequest {
            conversation_id: c.id.clone(),
            message_id: m.id.clone(),
            content: Some("Photosynthesis turns light into sugar".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        svc.search(&a, "photosynthesis", 10).await.unwrap().hits[0].message_id,
        m.id
    );

    svc.update_conversation(
        &a,
        UpdateConversationRequest {
            conversation_id: c.id.clone(),
            title: Some("Botany homework".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(svc.search(&a, "draft", 10).await.unwrap().hits.is_empty());
    let hits = svc.search(&a, "botany", 10).await.unwrap().hits;
    assert_eq!(
        hits[0].conversation.as_ref().unwrap().title,
        "Botany homework"
    );

    svc.supersede_messages(
        &a,
        SupersedeMessagesRequest {
            conversation_id: c.id.clone(),
            from_message_id: m.id.clone(),
            inclusive: true,
        },
    )
    .await
    .unwrap();
    assert!(
        svc.search(&a, "photosynthesis", 10)
            .await
            .unwrap()
            .hits
            .is_empty(),
        "superseded text is not searched"
    );
    svc.delete_conversation(&a, &c.id).await.unwrap();
    assert!(svc.search(&a, "botany", 10).await.unwrap().hits.is_empty());
}

async fn isolation_on_every_operation(svc: &Conversations) {
    let (a, b) = (alice(), bob());
    let c = create(svc, &a, "secret plans").await;
    let m = append(svc, &a, &c.id, Role::User, "the password is swordfish").await;
    let nf = |e: ConversationError| assert_eq!(code(e), tonic::Code::NotFound);

    nf(svc.get_conversation(&b, &c.id).await.unwrap_err());
    nf(svc
        .update_conversation(
            &b,
            UpdateConversationRequest {
                conversation_id: c.id.clone(),
                title: Some("mine".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    nf(svc
        .list_messages(
            &b,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    nf(svc.get_message(&b, &c.id, &m.id).await.unwrap_err());
    nf(svc
        .export(&b, &c.id, ExportFormat::Json as i32)
        .await
        .unwrap_err());
    nf(svc
        .append_message(
            &b,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::User as i32,
                content: "hi".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    nf(svc
        .update_message(
            &b,
            UpdateMessageRequest {
                conversation_id: c.id.clone(),
                message_id: m.id.clone(),
                content: Some("x".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    nf(svc
        .supersede_messages(
            &b,
            SupersedeMessagesRequest {
                conversation_id: c.id.clone(),
                from_message_id: m.id.clone(),
                inclusive: true,
            },
        )
        .await
        .unwrap_err());
    nf(svc.delete_conversation(&b, &c.id).await.unwrap_err());
    assert!(
        svc.list_conversations(&b, ListConversationsRequest::default())
            .await
            .unwrap()
            .conversations
            .is_empty()
    );
    assert!(
        svc.search(&b, "swordfish", 10)
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    assert!(svc.search(&b, "secret", 10).await.unwrap().hits.is_empty());
    // Bob's own data does not leak to Alice either.
    let bc = create(svc, &b, "bob swordfish").await;
    let hits = svc.search(&a, "swordfish", 10).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].conversation.as_ref().unwrap().id, c.id);
    nf(svc.get_conversation(&a, &bc.id).await.unwrap_err());

    // Alice's data is untouched by Bob's attempts.
    let again = svc.get_message(&a, &c.id, &m.id).await.unwrap();
    assert_eq!(again, m);
    assert_eq!(
        svc.get_conversation(&a, &c.id).await.unwrap().title,
        "secret plans"
    );
    // A message id from another conversation of the same user is not found either.
    let c2 = create(svc, &a, "other").await;
    nf(svc.get_message(&a, &c2.id, &m.id).await.unwrap_err());
}

async fn bad_input_is_invalid_argument(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "ok").await;
    let inv = |e: ConversationError| {
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        s.message().to_owned()
    };
    for bad in [
        "",
        "nope",
        "../../etc",
        "0190C4D2-7B1E-7C3A-9F00-1A2B3C4D5E6F",
        "'; DROP TABLE conversations; --",
    ] {
        inv(svc.get_conversation(&a, bad).await.unwrap_err());
        inv(svc.get_message(&a, &c.id, bad).await.unwrap_err());
        inv(svc.delete_conversation(&a, bad).await.unwrap_err());
    }
    let msg = inv(svc
        .create_conversation(
            &a,
            CreateConversationRequest {
                title: "x".repeat(201),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    assert!(msg.contains("200"), "{msg}");
    svc.create_conversation(
        &a,
        CreateConversationRequest {
            title: "é".repeat(200),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let msg = inv(svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::User as i32,
                content: "x".repeat(256 * 1024 + 1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    assert!(msg.contains("256 KiB"), "{msg}");
    inv(svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: 0,
                content: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    inv(svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: 99,
                content: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    inv(svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: 1,
                status: 42,
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    inv(svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: 1,
                parent_id: "bad".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    let msg = inv(svc
        .list_conversations(
            &a,
            ListConversationsRequest {
                page_size: 101,
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    assert!(msg.contains("100"), "{msg}");
    inv(svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                page_size: 201,
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
    for token in ["garbage", "Yzl8MHwwfDF8eA", "\u{0}", &"A".repeat(1000)] {
        inv(svc
            .list_conversations(
                &a,
                ListConversationsRequest {
                    page_token: token.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err());
        inv(svc
            .list_messages(
                &a,
                ListMessagesRequest {
                    conversation_id: c.id.clone(),
                    page_token: token.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err());
    }
    inv(svc.search(&a, "", 10).await.unwrap_err());
    inv(svc.search(&a, "!!! ???", 10).await.unwrap_err());
    inv(svc.search(&a, "ok", 51).await.unwrap_err());
    inv(svc.export(&a, &c.id, 9).await.unwrap_err());
}

async fn export_markdown_and_json(svc: &Conversations) {
    let a = alice();
    let c = svc
        .create_conversation(
            &a,
            CreateConversationRequest {
                title: "Rust: ownership?".into(),
                model: "gpt-4o".into(),
                system_prompt: "Be kind.".into(),
            },
        )
        .await
        .unwrap();
    append(svc, &a, &c.id, Role::User, "Explain borrowing").await;
    append(
        svc,
        &a,
        &c.id,
        Role::Assistant,
        "Borrowing lends access without moving.",
    )
    .await;
    let md = svc
        .export(&a, &c.id, ExportFormat::Markdown as i32)
        .await
        .unwrap();
    assert_eq!(md.filename, "rust-ownership.md");
    assert!(md.mime_type.starts_with("text/markdown"));
    let text = String::from_utf8(md.content).unwrap();
    assert!(text.starts_with("# Rust: ownership?\n"), "{text}");
    assert!(text.contains("## User") && text.contains("Explain borrowing"));
    assert!(text.contains("## Assistant") && text.contains("Borrowing lends access"));
    assert!(text.contains("> Be kind."));
    assert!(text.find("Explain").unwrap() < text.find("Borrowing lends").unwrap());

    let js = svc
        .export(&a, &c.id, ExportFormat::Json as i32)
        .await
        .unwrap();
    assert_eq!(js.mime_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&js.content).unwrap();
    assert_eq!(v["id"], c.id.as_str());
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    assert_eq!(v["messages"][0]["role"], "user");
    assert_eq!(
        v["messages"][1]["content"],
        "Borrowing lends access without moving."
    );
}

async fn concurrent_appends_get_distinct_positions(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "busy").await;
    let appends = (0..16).map(|i| {
        let (a, cid) = (a.clone(), c.id.clone());
        async move { append(svc, &a, &cid, Role::User, &format!("parallel {i}")).await }
    });
    let written = futures::future::join_all(appends).await;
    let listed = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                page_size: 200,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .messages;
    assert_eq!(listed.len(), 16);
    let ids: HashSet<_> = listed.iter().map(|m| &m.id).collect();
    assert!(written.iter().all(|m| ids.contains(&m.id)));
    assert_eq!(
        svc.get_conversation(&a, &c.id).await.unwrap().message_count,
        16
    );
}

async fn search_survives_odd_queries_and_finds_unicode(svc: &Conversations) {
    let a = alice();
    let c = create(svc, &a, "多言語 notes").await;
    append(
        svc,
        &a,
        &c.id,
        Role::User,
        "Café crème and naïve résumé; ½ cup",
    )
    .await;
    for q in [
        "½",
        "NEAR(a b)",
        "a* OR b",
        "\"quoted\"",
        "-minus",
        "x:y",
        "AND",
        "OR NOT",
        "col:value",
        "{title}: x",
        "^start",
        "emoji 🎉 party",
        "\u{0}nul",
        "ǅ",
        "🎉",
    ] {
        let r = svc.search(&a, q, 10).await;
        match r {
            Ok(_) => {}
            Err(e) => assert_eq!(code(e), tonic::Code::InvalidArgument, "query {q:?}"),
        }
    }
    let hits = svc.search(&a, "crème", 10).await.unwrap().hits;
    assert_eq!(hits.len(), 1, "accented words match");
    assert!(hits[0].snippet.contains("«crème»"), "{}", hits[0].snippet);
    let hits = svc.search(&a, "多言語", 10).await.unwrap().hits;
    assert_eq!(hits.len(), 1, "non-Latin title words match");
}

async fn search_finds_conversations_behind_a_crowded_one(svc: &Conversations) {
    use confab_conversation::model::new_id;
    use confab_conversation::store::ImportItem;
    let a = alice();
    let item = |n: usize, text: &str| {
        let id = new_id();
        ImportItem {
            conversation: Conversation {
                id: id.clone(),
                title: "t".into(),
                created_at_ms: 1,
                updated_at_ms: 2,
                message_count: n as u32,
                ..Default::default()
            },
            messages: (0..n)
                .map(|i| Message {
                    id: new_id(),
                    conversation_id: id.clone(),
                    role: Role::User as i32,
                    content: text.into(),
                    created_at_ms: i as i64,
                    ..Default::default()
                })
                .collect(),
        }
    };
    // 300 strong matches in one conversation, weaker ones in two others.
    let crowded = item(300, "quasar quasar quasar");
    let weak1 = item(
        1,
        "one quasar among many other words in a longer sentence here",
    );
    let weak2 = item(
        1,
        "another quasar among many other words in a longer sentence",
    );
    let ids = [&crowded, &weak1, &weak2].map(|i| i.conversation.id.clone());
    svc.store()
        .import(&a.user_id, vec![crowded, weak1, weak2])
        .await
        .unwrap();
    let hits = svc.search(&a, "quasar", 3).await.unwrap().hits;
    let got: HashSet<_> = hits
        .iter()
        .map(|h| h.conversation.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(got, ids.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(
        hits[0].conversation.as_ref().unwrap().id,
        ids[0],
        "strongest first"
    );
}

async fn orphaned_streaming_answers_read_as_interrupted(svc: &Conversations) {
    let (svc, clock) = on_manual_clock(svc);
    let svc = &svc;
    let a = alice();
    let c = create(svc, &a, "restart").await;
    append(svc, &a, &c.id, Role::User, "Tell me a story").await;
    let answer = svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::Assistant as i32,
                content: "Once upon".into(),
                status: MessageStatus::Streaming as i32,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let status = |m: &Message| MessageStatus::try_from(m.status).unwrap();
    let read = async || svc.get_message(&a, &c.id, &answer.id).await.unwrap();
    assert_eq!(status(&read().await), MessageStatus::Streaming);

    // Nobody updates it (the process writing it went away): five minutes is the limit.
    clock.advance(STALE_STREAMING_AFTER);
    assert_eq!(
        status(&read().await),
        MessageStatus::Streaming,
        "at the limit"
    );
    clock.advance(Duration::from_millis(1));
    let m = read().await;
    assert_eq!(status(&m), MessageStatus::Failed);
    assert_eq!(m.content, "Once upon", "the partial text is kept");
    assert!(
        m.error_message.contains("interrupted"),
        "{}",
        m.error_message
    );
    let listed = svc
        .list_messages(
            &a,
            ListMessagesRequest {
                conversation_id: c.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(status(&listed.messages[1]), MessageStatus::Failed);

    // A generation that was in fact alive still completes it.
    svc.update_message(
        &a,
        UpdateMessageRequest {
            conversation_id: c.id.clone(),
            message_id: answer.id.clone(),
            content: Some("Once upon a time.".into()),
            status: Some(MessageStatus::Complete as i32),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let m = read().await;
    assert_eq!(status(&m), MessageStatus::Complete);
    assert!(m.error_message.is_empty());

    // A streaming answer that keeps being saved never reads as interrupted.
    let live = svc
        .append_message(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::Assistant as i32,
                status: MessageStatus::Streaming as i32,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for i in 0..4 {
        // Four saves, each four minutes after the last: sixteen minutes in all.
        clock.advance(Duration::from_secs(240));
        let m = svc
            .update_message(
                &a,
                UpdateMessageRequest {
                    conversation_id: c.id.clone(),
                    message_id: live.id.clone(),
                    content: Some(format!("part {i}")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(status(&m), MessageStatus::Streaming);
        assert_eq!(
            status(&svc.get_message(&a, &c.id, &live.id).await.unwrap()),
            MessageStatus::Streaming
        );
    }
}
