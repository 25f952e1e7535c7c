//! MongoDB store (distributed mode). Collections `conversations` and `messages`, indexes
//! created at start. Search does not use `$text` (MongoDB-wire test servers refuse it,
//! and Atlas needs a separate Search index): every document carries `terms`, its
//! distinct lowercased words (the same tokenizer the queries use), under a multikey
//! index `(owner, terms)`. A query fetches the documents holding its most specific
//! word (at most [`CANDIDATES`] per collection), keeps those holding every word, ranks
//! them in Rust with BM25 and cuts a snippet. Queries use only shapes the MongoDB-wire
//! test server plans on an index (equality on the indexed fields); Atlas runs them too.

use std::collections::HashMap;

use confab_proto::conversation::v1::{Attachment, Conversation, Message};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, IndexModel};
use prost::Message as _;

use super::{
    ConversationPatch, ConversationQuery, ConversationStore, ImportItem, MessagePatch,
    MessageQuery, StoredHit, StoredMessage,
};
use crate::error::Result;
use crate::plan::LedgerAddition;
use crate::search;

mod docs;
mod migrate;

use docs::*;

/// Matching messages ranked per query; beyond this the most relevant of the first
/// [`CANDIDATES`] found win (bounded work for very common words).
pub const CANDIDATES: i64 = 1000;
const TITLE_WEIGHT: f64 = 4.0;
/// Retries of an append that lost the race for a position.
const APPEND_ATTEMPTS: u32 = 32;

pub(super) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

#[derive(Debug, Clone)]
pub struct MongoStore {
    conversations: Collection<Document>,
    messages: Collection<Document>,
    /// One document per one-time data migration done (`_id` names it).
    migrations: Collection<Document>,
}

impl MongoStore {
    /// Connects and creates the indexes.
    pub async fn connect(uri: &str, db_name: &str) -> Result<Self> {
        let client = Client::with_uri_str(uri).await?;
        let db = client.database(db_name);
        let this = Self {
            conversations: db.collection("conversations"),
            messages: db.collection("messages"),
            migrations: db.collection("migrations"),
        };
        this.create_indexes().await?;
        this.compact_stored_plans().await?;
        Ok(this)
    }

    async fn create_indexes(&self) -> Result<()> {
        let idx = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        self.conversations
            .create_indexes([
                idx(
                    doc! {"owner": 1, "updated_at": -1, "_id": -1},
                    "owner_activity",
                    false,
                ),
                idx(
                    doc! {"owner": 1, "pinned": -1, "updated_at": -1, "_id": -1},
                    "owner_pinned_activity",
                    false,
                ),
                idx(doc! {"owner": 1, "terms": 1}, "owner_terms", false),
            ])
            .await?;
        self.messages
            .create_indexes([
                idx(
                    doc! {"conversation_id": 1, "seq": 1},
                    "conversation_seq",
                    true,
                ),
                idx(
                    doc! {"conversation_id": 1, "created_at": 1},
                    "conversation_created",
                    false,
                ),
                idx(doc! {"owner": 1, "terms": 1}, "owner_terms", false),
            ])
            .await?;
        Ok(())
    }

    /// Reads filter on `_id` alone (every server plans it on the primary index) and
    /// check the owner here.
    async fn conversation_doc(
        &self,
        owner: &str,
        id: &str,
        projection: Document,
    ) -> Result<Option<Document>> {
        Ok(self
            .conversations
            .find_one(doc! {"_id": id})
            .projection(projection)
            .await?
            .filter(|d| d.get_str("owner") == Ok(owner)))
    }

    async fn exists(&self, owner: &str, id: &str) -> Result<bool> {
        Ok(self
            .conversation_doc(owner, id, doc! {"_id": 1, "owner": 1})
            .await?
            .is_some())
    }

    async fn find_message(
        &self,
        owner: &str,
        cid: &str,
        mid: &str,
    ) -> Result<Option<StoredMessage>> {
        self.messages
            .find_one(doc! {"_id": mid})
            .projection(no_terms())
            .await?
            .filter(|d| d.get_str("owner") == Ok(owner) && d.get_str("conversation_id") == Ok(cid))
            .map(|d| message_from(&d))
            .transpose()
    }
}

#[async_trait::async_trait]
impl ConversationStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn create_conversation(&self, owner: &str, c: Conversation) -> Result<()> {
        self.conversations
            .insert_one(conversation_doc(owner, &c, 0))
            .await?;
        Ok(())
    }

    async fn list_conversations(
        &self,
        owner: &str,
        q: &ConversationQuery,
    ) -> Result<Vec<Conversation>> {
        let mut filter = doc! {"owner": owner};
        if let Some(c) = &q.after {
            let older = vec![
                doc! {"updated_at": {"$lt": c.updated_at_ms}},
                doc! {"updated_at": c.updated_at_ms, "_id": {"$lt": &c.id}},
            ];
            if !q.pinned_first {
                filter.insert("$or", older);
            } else if c.pinned {
                let or: Vec<Document> = std::iter::once(doc! {"pinned": false})
                    .chain(older.into_iter().map(|mut d| {
                        d.insert("pinned", true);
                        d
                    }))
                    .collect();
                filter.insert("$or", or);
            } else {
                filter.insert("pinned", false);
                filter.insert("$or", older);
            }
        }
        let sort = if q.pinned_first {
            doc! {"pinned": -1, "updated_at": -1, "_id": -1}
        } else {
            doc! {"updated_at": -1, "_id": -1}
        };
        let docs: Vec<Document> = self
            .conversations
            .find(filter)
            .sort(sort)
            .limit(i64::from(q.limit))
            .projection(no_terms())
            .await?
            .try_collect()
            .await?;
        Ok(docs.iter().map(conversation_from).collect())
    }

    async fn get_conversation(&self, owner: &str, id: &str) -> Result<Option<Conversation>> {
        Ok(self
            .conversation_doc(owner, id, no_terms())
            .await?
            .map(|d| conversation_from(&d)))
    }

    async fn update_conversation(
        &self,
        owner: &str,
        id: &str,
        p: &ConversationPatch,
    ) -> Result<Option<Conversation>> {
        let mut set = Document::new();
        if let Some(t) = &p.title {
            set.insert("title", t);
            set.insert("title_set", true);
            set.insert("terms", search::index_terms(&[t]));
        }
        if let Some(m) = &p.model {
            set.insert("model", m);
        }
        if let Some(s) = &p.system_prompt {
            set.insert("system_prompt", s);
        }
        if let Some(pinned) = p.pinned {
            set.insert("pinned", pinned);
        }
        let mut update = Document::new();
        if !set.is_empty() {
            update.insert("$set", set);
        }
        if let Some(t) = p.touch_at_ms {
            update.insert("$max", doc! {"updated_at": t});
        }
        if update.is_empty() {
            return self.get_conversation(owner, id).await;
        }
        Ok(self
            .conversations
            .find_one_and_update(doc! {"_id": id, "owner": owner}, update)
            .return_document(ReturnDocument::After)
            .projection(no_terms())
            .await?
            .map(|d| conversation_from(&d)))
    }

    async fn delete_conversation(&self, owner: &str, id: &str) -> Result<Option<Vec<String>>> {
        let deleted = self
            .conversations
            .find_one_and_delete(doc! {"_id": id, "owner": owner})
            .projection(doc! {"_id": 1})
            .await?;
        if deleted.is_none() {
            return Ok(None);
        }
        let with_files: Vec<Document> = self
            .messages
            .find(doc! {"conversation_id": id, "owner": owner, "attachments.0": {"$exists": true}})
            .sort(doc! {"seq": 1})
            .projection(doc! {"attachments": 1})
            .await?
            .try_collect()
            .await?;
        let attachments: Vec<Attachment> = with_files.iter().flat_map(attachments_from).collect();
        self.messages
            .delete_many(doc! {"conversation_id": id, "owner": owner})
            .await?;
        Ok(Some(super::file_ids(&attachments)))
    }

    async fn list_messages(
        &self,
        owner: &str,
        conversation_id: &str,
        q: &MessageQuery,
    ) -> Result<Option<Vec<StoredMessage>>> {
        if !self.exists(owner, conversation_id).await? {
            return Ok(None);
        }
        // Filter on the index fields only; superseded messages are skipped here, reading
        // on until the page is full.
        let direction: i32 = if q.newest_first { -1 } else { 1 };
        let mut after = q.after_seq;
        let mut out = Vec::new();
        loop {
            let mut filter = doc! {"conversation_id": conversation_id};
            if let Some(after) = after {
                let mut range = Document::new();
                range.insert(if q.newest_first { "$lt" } else { "$gt" }, after);
                filter.insert("seq", range);
            }
            let docs: Vec<Document> = self
                .messages
                .find(filter)
                .sort(doc! {"seq": direction})
                .limit(i64::from(q.limit))
                .projection(if q.omit_context {
                    doc! { "terms": 0, "context": 0 }
                } else {
                    no_terms()
                })
                .await?
                .try_collect()
                .await?;
            let full = docs.len() as u32 == q.limit;
            for d in &docs {
                let m = message_from(d)?;
                after = Some(m.seq);
                if (q.include_superseded || !m.message.superseded) && out.len() < q.limit as usize {
                    out.push(m);
                }
            }
            if !full || out.len() >= q.limit as usize {
                return Ok(Some(out));
            }
        }
    }

    async fn get_message(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<Option<StoredMessage>> {
        self.find_message(owner, conversation_id, message_id).await
    }

    async fn append_message(&self, owner: &str, m: Message) -> Result<Option<Message>> {
        // `next_seq` is only a hint (a server may not serialise concurrent $inc); the
        // unique (conversation_id, seq) index decides, and a lost race retries after
        // the last stored position. The count is recomputed after the insert.
        let before = self
            .conversations
            .find_one_and_update(
                doc! {"_id": &m.conversation_id, "owner": owner},
                doc! {
                    "$inc": {"next_seq": 1_i64},
                    "$max": {"updated_at": m.created_at_ms},
                },
            )
            .return_document(ReturnDocument::Before)
            .projection(doc! {"next_seq": 1})
            .await?;
        let Some(before) = before else {
            return Ok(None);
        };
        let mut seq = int(&before, "next_seq");
        let mut attempts = 0;
        loop {
            match self.messages.insert_one(message_doc(owner, seq, &m)).await {
                Ok(_) => break,
                Err(e) if is_duplicate_key(&e) && attempts < APPEND_ATTEMPTS => {
                    attempts += 1;
                    let last = self
                        .messages
                        .find_one(doc! {"conversation_id": &m.conversation_id})
                        .sort(doc! {"seq": -1})
                        .projection(doc! {"seq": 1})
                        .await?;
                    seq = seq.max(last.map_or(0, |d| int(&d, "seq") + 1));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let count = self
            .messages
            .count_documents(doc! {"conversation_id": &m.conversation_id})
            .await?;
        self.conversations
            .update_one(
                doc! {"_id": &m.conversation_id},
                doc! {"$max": {"message_count": count as i64, "next_seq": seq + 1}},
            )
            .await?;
        Ok(Some(m))
    }

    async fn update_message(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
        p: &MessagePatch,
    ) -> Result<Option<Message>> {
        let mut set = Document::new();
        if let Some(c) = &p.content {
            set.insert("content", c);
            set.insert("terms", search::index_terms(&[c]));
        }
        if let Some(s) = p.status {
            set.insert("status", s);
        }
        if let Some(u) = &p.usage {
            set.insert("usage", binary(u.encode_to_vec()));
        }
        if let Some(c) = &p.context {
            set.insert("context", binary(c.encode()));
        }
        if let Some(m) = &p.model {
            set.insert("model", m);
        }
        if let Some(e) = &p.error_message {
            set.insert("error_message", e);
        }
        let mut update = doc! {"$max": {"updated_at": p.updated_at_ms}};
        if !set.is_empty() {
            update.insert("$set", set);
        }
        self.messages
            .find_one_and_update(
                doc! {"_id": message_id, "conversation_id": conversation_id, "owner": owner},
                update,
            )
            .return_document(ReturnDocument::After)
            .projection(no_terms())
            .await?
            .map(|d| message_from(&d).map(|m| m.message))
            .transpose()
    }

    async fn add_token_counts(
        &self,
        owner: &str,
        conversation_id: &str,
        additions: Vec<LedgerAddition>,
    ) -> Result<()> {
        for (mid, model, tokens) in additions {
            // One atomic push per count, only while the ledger lacks the model.
            self.messages
                .update_one(
                    doc! {
                        "_id": &mid,
                        "owner": owner,
                        "conversation_id": conversation_id,
                        "token_ledger.model": {"$ne": &model},
                    },
                    doc! {"$push": {"token_ledger": {"model": &model, "tokens": i64::from(tokens)}}},
                )
                .await?;
        }
        Ok(())
    }

    async fn supersede_messages(
        &self,
        owner: &str,
        conversation_id: &str,
        from_message_id: &str,
        inclusive: bool,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>> {
        let Some(from) = self
            .find_message(owner, conversation_id, from_message_id)
            .await?
        else {
            return Ok(None);
        };
        let first = if inclusive { from.seq } else { from.seq + 1 };
        // The conversation's next position: past its last message (`next_seq` is only
        // a hint, see `append_message`).
        let last = self
            .messages
            .find_one(doc! {"conversation_id": conversation_id})
            .sort(doc! {"seq": -1})
            .projection(doc! {"seq": 1})
            .await?;
        let mark = last.map_or(0, |d| int(&d, "seq") + 1);
        let filter = doc! {
            "conversation_id": conversation_id,
            "owner": owner,
            "seq": {"$gte": first},
            "superseded": false,
        };
        let ids: Vec<String> = self
            .messages
            .find(filter.clone())
            .sort(doc! {"seq": 1})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .map(|d| text(d, "_id"))
            .collect();
        if !ids.is_empty() {
            self.messages
                .update_many(
                    doc! {"_id": {"$in": ids.clone()}, "owner": owner},
                    doc! {
                        "$set": {"superseded": true, "superseded_mark": mark},
                        "$max": {"updated_at": now_ms},
                    },
                )
                .await?;
        }
        Ok(Some(ids))
    }

    async fn search(&self, owner: &str, terms: &[String], limit: u32) -> Result<Vec<StoredHit>> {
        // The index drives on one word (equality on the multikey index: the one query
        // shape every server plans well); the other words and `superseded` are checked
        // here. The longest word is taken as the most specific.
        let driver = terms
            .iter()
            .max_by_key(|t| (t.chars().count(), std::cmp::Reverse(t.as_str())))
            .cloned()
            .unwrap_or_default();
        let (titles, messages) = tokio::try_join!(
            async {
                self.conversations
                    .find(doc! {"owner": owner, "terms": &driver})
                    .projection(no_terms())
                    .limit(CANDIDATES)
                    .await?
                    .try_collect::<Vec<Document>>()
                    .await
            },
            async {
                self.messages
                    .find(doc! {"owner": owner, "terms": &driver})
                    .projection(
                        doc! {"_id": 1, "conversation_id": 1, "content": 1, "superseded": 1},
                    )
                    .limit(CANDIDATES)
                    .await?
                    .try_collect::<Vec<Document>>()
                    .await
            }
        )?;
        let titles: Vec<&Document> = titles
            .iter()
            .filter(|d| search::matches_all(d.get_str("title").unwrap_or_default(), terms))
            .collect();
        let messages: Vec<&Document> = messages
            .iter()
            .filter(|d| !flag(d, "superseded"))
            .filter(|d| search::matches_all(d.get_str("content").unwrap_or_default(), terms))
            .collect();
        // conversation id → (message id, text, score); the best per conversation.
        let mut best: HashMap<String, (String, String, f64)> = HashMap::new();
        let mut keep = |cid: String, mid: String, body: String, score: f64| {
            let slot = best
                .entry(cid)
                .or_insert_with(|| (String::new(), String::new(), f64::MIN));
            if score > slot.2 {
                *slot = (mid, body, score);
            }
        };
        let mut convs: HashMap<String, Conversation> = HashMap::new();
        for d in titles {
            let c = conversation_from(d);
            let s = TITLE_WEIGHT * search::score(&c.title, terms, 8.0);
            keep(c.id.clone(), String::new(), c.title.clone(), s);
            convs.insert(c.id.clone(), c);
        }
        let docs: Vec<(String, String, String)> = messages
            .iter()
            .map(|d| {
                (
                    text(d, "conversation_id"),
                    text(d, "_id"),
                    text(d, "content"),
                )
            })
            .collect();
        let avg = docs
            .iter()
            .map(|d| search::tokens(&d.2).count() as f64)
            .sum::<f64>()
            / docs.len().max(1) as f64;
        for (cid, mid, body) in docs {
            let s = search::score(&body, terms, avg);
            keep(cid, mid, body, s);
        }
        let mut ranked: Vec<(String, (String, String, f64))> = best.into_iter().collect();
        ranked.sort_by(|a, b| b.1.2.total_cmp(&a.1.2).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(limit as usize);
        let missing: Vec<String> = ranked
            .iter()
            .map(|r| r.0.clone())
            .filter(|id| !convs.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let found: Vec<Document> = self
                .conversations
                .find(doc! {"_id": {"$in": missing}, "owner": owner})
                .projection(no_terms())
                .await?
                .try_collect()
                .await?;
            for d in &found {
                let c = conversation_from(d);
                convs.insert(c.id.clone(), c);
            }
        }
        Ok(ranked
            .into_iter()
            .filter_map(|(cid, (mid, body, score))| {
                let conversation = convs.remove(&cid)?;
                Some(StoredHit {
                    conversation,
                    message_id: mid,
                    snippet: search::snippet(&body, terms, 24),
                    score,
                })
            })
            .collect())
    }

    async fn import(&self, owner: &str, items: Vec<ImportItem>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let convs: Vec<Document> = items
            .iter()
            .map(|i| conversation_doc(owner, &i.conversation, i.messages.len() as i64))
            .collect();
        self.conversations.insert_many(convs).ordered(false).await?;
        let msgs: Vec<Document> = items
            .iter()
            .flat_map(|i| {
                i.messages
                    .iter()
                    .enumerate()
                    .map(|(seq, m)| message_doc(owner, seq as i64, m))
            })
            .collect();
        if !msgs.is_empty() {
            self.messages.insert_many(msgs).ordered(false).await?;
        }
        Ok(())
    }
}
