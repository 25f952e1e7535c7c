//! One-time data migrations, recorded in the `migrations` collection.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::docs::{binary, ledger_bson, message_from, plan_from, text};
use super::{MongoStore, is_duplicate_key};
use crate::error::Result;
use crate::plan::{self, SpanMessage};

/// The migration that rewrote full context plans by reference.
const PLANS_BY_REFERENCE: &str = "context-plans-by-reference";

impl MongoStore {
    /// Once per database: rewrites plans stored in full (before plans were stored by
    /// reference). Messages superseded before then have no mark and count as superseded
    /// from the start, so a plan that saw one stays as it was. Safe to run twice.
    pub(super) async fn compact_stored_plans(&self) -> Result<()> {
        if self
            .migrations
            .find_one(doc! {"_id": PLANS_BY_REFERENCE})
            .await?
            .is_some()
        {
            return Ok(());
        }
        let mut conversations: Vec<String> = self
            .messages
            .find(doc! {"context": {"$exists": true}})
            .projection(doc! {"conversation_id": 1})
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .map(|d| text(d, "conversation_id"))
            .collect();
        conversations.sort();
        conversations.dedup();
        let mut compacted = 0usize;
        for cid in conversations {
            let docs: Vec<Document> = self
                .messages
                .find(doc! {"conversation_id": &cid})
                .sort(doc! {"seq": 1})
                .projection(doc! {"content": 0, "terms": 0})
                .await?
                .try_collect()
                .await?;
            let mut span: Vec<SpanMessage> = Vec::with_capacity(docs.len());
            let mut plans = Vec::with_capacity(docs.len());
            for d in &docs {
                span.push(message_from(d)?.span());
                plans.push(plan_from(d)?);
            }
            let (new_plans, touched) = plan::compact_conversation(&mut span, &plans);
            for (i, p) in &new_plans {
                self.messages
                    .update_one(
                        doc! {"_id": &span[*i].id},
                        doc! {"$set": {"context": binary(p.encode())}},
                    )
                    .await?;
            }
            for j in touched {
                self.messages
                    .update_one(
                        doc! {"_id": &span[j].id},
                        doc! {"$set": {"token_ledger": ledger_bson(&span[j].ledger)}},
                    )
                    .await?;
            }
            compacted += new_plans.len();
        }
        if compacted > 0 {
            tracing::info!(plans = compacted, "context plans rewritten by reference");
        }
        match self
            .migrations
            .insert_one(doc! {"_id": PLANS_BY_REFERENCE})
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
