//! Context plans are stored by reference: the bytes stored per answer stay the same
//! however long the conversation grows, and every reader still gets the whole plan the
//! chat service sent (also after regenerates and edits, and for rows written before).
//! Both stores: SQLite in a temp dir, MongoDB on the MongoDB-wire test server.

use std::collections::HashMap;

use confab_common::Identity;
use confab_common::testing::{MongoServer, unique_name};
use confab_conversation::store::ImportItem;
use confab_conversation::{Config, ConversationStore, Conversations, MongoStore, open_store};
use confab_proto::conversation::v1::*;
use prost::Message as _;

const MODEL: &str = "gpt-test";

/// A conversation driven the way the chat service drives it, remembering each plan sent.
struct Chat<'a> {
    svc: &'a Conversations,
    user: Identity,
    cid: String,
    sent: HashMap<String, ContextPlan>,
}

fn entry(m: &Message) -> ContextMessage {
    ContextMessage {
        message_id: m.id.clone(),
        role: if m.role == Role::Assistant as i32 {
            Role::Assistant as i32
        } else {
            Role::User as i32
        },
        tokens: m.content.len() as u32 / 4 + 4,
    }
}

impl<'a> Chat<'a> {
    async fn start(svc: &'a Conversations) -> Self {
        let user = Identity::user(unique_name("planner"));
        let c = svc
            .create_conversation(&user, CreateConversationRequest::default())
            .await
            .unwrap();
        Self {
            svc,
            user,
            cid: c.id,
            sent: HashMap::new(),
        }
    }

    async fn visible(&self) -> Vec<Message> {
        self.svc
            .list_messages(
                &self.user,
                ListMessagesRequest {
                    conversation_id: self.cid.clone(),
                    page_size: 200,
                    omit_context: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .messages
    }

    async fn append(&self, role: Role, content: &str) -> Message {
        self.svc
            .append_message(
                &self.user,
                AppendMessageRequest {
                    conversation_id: self.cid.clone(),
                    role: role as i32,
                    content: content.into(),
                    status: if role == Role::Assistant {
                        MessageStatus::Streaming as i32
                    } else {
                        MessageStatus::Complete as i32
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    /// Answers `question`: the newest `keep` visible messages before it are the history.
    async fn answer(&mut self, question: &Message, history: &[Message], keep: usize) -> Message {
        let kept = &history[history.len().saturating_sub(keep)..];
        let mut messages: Vec<ContextMessage> = kept.iter().map(entry).collect();
        messages.push(ContextMessage {
            tokens: 99, // the current message counts its attachments too
            ..entry(question)
        });
        let plan = ContextPlan {
            model: MODEL.into(),
            context_window: 128_000,
            reserved_for_answer: 4096,
            total_prompt_tokens: messages.iter().map(|m| m.tokens).sum(),
            omitted_messages: (history.len() - kept.len()) as u32,
            messages,
            ..Default::default()
        };
        let a = self.append(Role::Assistant, "").await;
        let saved = self
            .svc
            .update_message(
                &self.user,
                UpdateMessageRequest {
                    conversation_id: self.cid.clone(),
                    message_id: a.id.clone(),
                    content: Some(format!("answer to: {}", question.content)),
                    status: Some(MessageStatus::Complete as i32),
                    context: Some(plan.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            saved.context.as_ref(),
            Some(&plan),
            "UpdateMessage answers the plan sent"
        );
        self.sent.insert(a.id.clone(), plan);
        saved
    }

    /// A new turn: the question, then its answer over everything visible before it.
    async fn turn(&mut self, text: &str) -> Message {
        let history = self.visible().await;
        let q = self.append(Role::User, text).await;
        self.answer(&q, &history, usize::MAX).await
    }

    /// Bytes the store keeps for the answer's plan.
    async fn stored_bytes(&self, answer: &str) -> usize {
        let m = self
            .svc
            .store()
            .get_message(&self.user.user_id, &self.cid, answer)
            .await
            .unwrap()
            .unwrap();
        m.stored_plan().unwrap().encode().len()
    }

    /// Every answer, superseded ones too, read back with its plan: the plan sent.
    async fn check_every_plan(&self) {
        let all = self
            .svc
            .list_messages(
                &self.user,
                ListMessagesRequest {
                    conversation_id: self.cid.clone(),
                    page_size: 200,
                    include_superseded: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .messages;
        let mut checked = 0;
        for m in &all {
            if let Some(sent) = self.sent.get(&m.id) {
                assert_eq!(m.context.as_ref(), Some(sent), "listed plan of {}", m.id);
                let got = self
                    .svc
                    .get_message(&self.user, &self.cid, &m.id)
                    .await
                    .unwrap();
                assert_eq!(got.context.as_ref(), Some(sent), "plan of {}", m.id);
                checked += 1;
            }
        }
        assert_eq!(checked, self.sent.len());
    }
}

async fn sqlite() -> (Conversations, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&Config::sqlite(dir.path())).await.unwrap();
    (Conversations::new(store, None), dir)
}

async fn mongo() -> (Conversations, String) {
    let server = MongoServer::shared().await;
    let db = unique_name("plans");
    let store = open_store(&Config::mongo(server.uri(), &db)).await.unwrap();
    (Conversations::new(store, None), db)
}

async fn stored_bytes_stay_flat_as_the_conversation_grows(svc: &Conversations) {
    let mut chat = Chat::start(svc).await;
    let mut stored = Vec::new();
    let mut sent = Vec::new();
    for i in 0..40 {
        let a = chat
            .turn(&format!("question number {i} with some words"))
            .await;
        stored.push(chat.stored_bytes(&a.id).await);
        sent.push(chat.sent[&a.id].encoded_len());
    }
    println!("turn  sent-plan-bytes  stored-plan-bytes");
    for i in [0, 1, 9, 19, 39] {
        println!("{:>4}  {:>15}  {:>17}", i + 1, sent[i], stored[i]);
    }
    // The plan sent grows with the history (one entry per message)...
    assert!(sent[39] > 10 * sent[1], "{sent:?}");
    // ...the stored one does not: a reference and the message answered.
    let (min, max) = (
        stored[1..].iter().min().unwrap(),
        stored[1..].iter().max().unwrap(),
    );
    assert!(
        max - min <= 4,
        "stored plan bytes vary with length: {stored:?}"
    );
    let total: usize = stored.iter().sum();
    assert!(
        total < 40 * (stored[1] + 4),
        "total {total} grows faster than the turns"
    );
    chat.check_every_plan().await;
}

async fn regenerates_and_edits_keep_every_plan_whole(svc: &Conversations) {
    let mut chat = Chat::start(svc).await;
    for i in 0..5 {
        chat.turn(&format!("turn {i}")).await;
    }
    // Regenerate the last answer: its question stays, the old answer is superseded.
    let visible = chat.visible().await;
    let q5 = visible[visible.len() - 2].clone();
    svc.supersede_messages(
        &chat.user,
        SupersedeMessagesRequest {
            conversation_id: chat.cid.clone(),
            from_message_id: q5.id.clone(),
            inclusive: false,
        },
    )
    .await
    .unwrap();
    let history = &visible[..visible.len() - 2];
    chat.answer(&q5, history, usize::MAX).await;

    // Edit the third question: it and everything after are superseded.
    let visible = chat.visible().await;
    let q3 = visible[4].clone();
    svc.supersede_messages(
        &chat.user,
        SupersedeMessagesRequest {
            conversation_id: chat.cid.clone(),
            from_message_id: q3.id.clone(),
            inclusive: true,
        },
    )
    .await
    .unwrap();
    let history = chat.visible().await;
    let edited = chat.append(Role::User, "turn 2, edited").await;
    chat.answer(&edited, &history, usize::MAX).await;

    // More turns over a history with superseded messages in between, one that left
    // the oldest messages out, then an edit of the very first question: the plans of
    // answers that saw those messages still list them.
    for i in 0..3 {
        chat.turn(&format!("after the edit {i}")).await;
    }
    let history = chat.visible().await;
    let q = chat.append(Role::User, "short window").await;
    chat.answer(&q, &history, 3).await;
    let first = chat.visible().await[0].clone();
    svc.supersede_messages(
        &chat.user,
        SupersedeMessagesRequest {
            conversation_id: chat.cid.clone(),
            from_message_id: first.id,
            inclusive: true,
        },
    )
    .await
    .unwrap();
    chat.check_every_plan().await;
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let (svc, _dir) = super::sqlite().await; super::$name(&svc).await; })*
        }
        mod mongo {
            $(#[tokio::test] async fn $name() { let (svc, _db) = super::mongo().await; super::$name(&svc).await; })*
        }
    };
}

both!(
    stored_bytes_stay_flat_as_the_conversation_grows,
    regenerates_and_edits_keep_every_plan_whole,
);

/// Rows as written before plans were stored by reference: every plan in full.
fn old_conversation(turns: usize) -> (ImportItem, HashMap<String, ContextPlan>) {
    let cid = confab_conversation::model::new_id();
    let mut messages: Vec<Message> = Vec::new();
    let mut plans = HashMap::new();
    for i in 0..turns {
        let q = Message {
            id: confab_conversation::model::new_id(),
            conversation_id: cid.clone(),
            role: Role::User as i32,
            content: format!("old question {i}"),
            status: MessageStatus::Complete as i32,
            ..Default::default()
        };
        let mut entries: Vec<ContextMessage> = messages.iter().map(entry).collect();
        entries.push(entry(&q));
        let plan = ContextPlan {
            model: MODEL.into(),
            messages: entries,
            ..Default::default()
        };
        let a = Message {
            id: confab_conversation::model::new_id(),
            conversation_id: cid.clone(),
            role: Role::Assistant as i32,
            content: format!("old answer {i}"),
            status: MessageStatus::Complete as i32,
            context: Some(plan.clone()),
            ..Default::default()
        };
        plans.insert(a.id.clone(), plan);
        messages.push(q);
        messages.push(a);
    }
    let conversation = Conversation {
        id: cid,
        message_count: messages.len() as u32,
        ..Default::default()
    };
    (
        ImportItem {
            conversation,
            messages,
        },
        plans,
    )
}

/// After the migration the old rows are stored by reference and read back whole.
async fn check_migrated(
    store: &dyn ConversationStore,
    svc: &Conversations,
    user: &Identity,
    cid: &str,
    plans: &HashMap<String, ContextPlan>,
) {
    for (id, plan) in plans {
        let stored = store
            .get_message(&user.user_id, cid, id)
            .await
            .unwrap()
            .unwrap();
        if plan.messages.len() > 1 {
            assert!(stored.history.is_some(), "{id} migrated");
            assert_eq!(stored.message.context.as_ref().unwrap().messages.len(), 1);
        }
        let read = svc.get_message(user, cid, id).await.unwrap();
        assert_eq!(read.context.as_ref(), Some(plan));
    }
}

#[tokio::test]
async fn sqlite_rows_written_before_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let user = Identity::user(unique_name("old"));
    let (item, plans) = old_conversation(12);
    let cid = item.conversation.id.clone();
    {
        let store = open_store(&Config::sqlite(dir.path())).await.unwrap();
        store.import(&user.user_id, vec![item]).await.unwrap();
    }
    // Back to the version-1 schema: the import stored every plan in full.
    let path = dir.path().join("conversation.db");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn.execute_batch(
        "ALTER TABLE messages DROP COLUMN superseded_mark; \
         ALTER TABLE messages DROP COLUMN token_ledger; PRAGMA user_version = 1;",
    )
    .unwrap();
    let before: i64 = conn
        .query_row("SELECT sum(length(context)) FROM messages", [], |r| {
            r.get(0)
        })
        .unwrap();
    drop(conn);

    let store = open_store(&Config::sqlite(dir.path())).await.unwrap();
    let svc = Conversations::new(store.clone(), None);
    check_migrated(&*store, &svc, &user, &cid, &plans).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let after: i64 = conn
        .query_row("SELECT sum(length(context)) FROM messages", [], |r| {
            r.get(0)
        })
        .unwrap();
    println!("stored plan bytes, 12 turns: {before} before the migration, {after} after");
    assert!(after * 2 < before, "{after} vs {before}");
}

#[tokio::test]
async fn mongo_rows_written_before_are_migrated() {
    let server = MongoServer::shared().await;
    let db = unique_name("oldplans");
    let user = Identity::user(unique_name("old"));
    let (item, plans) = old_conversation(12);
    let cid = item.conversation.id.clone();
    {
        let store = MongoStore::connect(&server.uri(), &db).await.unwrap();
        store.import(&user.user_id, vec![item]).await.unwrap();
    }
    // A database from before: its migration was never recorded.
    let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    client
        .database(&db)
        .collection::<mongodb::bson::Document>("migrations")
        .delete_many(mongodb::bson::doc! {})
        .await
        .unwrap();
    let store = std::sync::Arc::new(MongoStore::connect(&server.uri(), &db).await.unwrap());
    let svc = Conversations::new(store.clone(), None);
    check_migrated(&*store, &svc, &user, &cid, &plans).await;
}
