//! How context plans are stored: by reference, so a conversation's plans grow linearly.
//!
//! The chat service sends a full plan with each answer: one entry per message the model
//! saw (the newest history that fitted, then the message answered). Stored that way, a
//! conversation of N answers holds N²/2 entries. Instead the history part is stored as a
//! [`HistoryRef`] — the span of positions it came from — and each message keeps its own
//! token count per model once ([`TokenLedger`]). Reading expands the reference back into
//! the same entries, so readers see exactly the plan that was sent.
//!
//! The span is exact because of how supersedes are recorded: a message superseded when
//! the conversation's next position was `k` carries `superseded_mark = k`. The history a
//! plan saw is every message in `first_seq..end_seq` (`end_seq` = the position of the
//! message answered) that was not superseded when that message was appended: not
//! superseded, or superseded with a mark past `end_seq`. Marks given later are always
//! past it, so the expansion never changes. A plan is compacted only when the expansion
//! reproduces it entry for entry; otherwise it is stored as sent.

use confab_proto::conversation::v1::{ContextMessage, ContextPlan, Role};
use prost::Message as _;

/// Token counts of one message as a history entry, per model (tokenizers differ).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenLedger {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<LedgerEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LedgerEntry {
    #[prost(string, tag = "1")]
    pub model: String,
    #[prost(uint32, tag = "2")]
    pub tokens: u32,
}

/// Models one message keeps counts for; a conversation that used more stores the rest
/// of its plans as sent.
pub const MAX_LEDGER_MODELS: usize = 4;

/// Longest span of positions a reference covers (bounds the read that expands it).
pub const MAX_REFERENCED_SPAN: i64 = 10_000;

impl TokenLedger {
    pub fn get(&self, model: &str) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.model == model)
            .map(|e| e.tokens)
    }

    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }
}

/// The history a plan saw, by position: messages in `first_seq..end_seq` visible when
/// the message at `end_seq` (the one answered) was appended.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct HistoryRef {
    #[prost(int64, tag = "1")]
    pub first_seq: i64,
    #[prost(int64, tag = "2")]
    pub end_seq: i64,
}

/// The stored form of a plan: the plan's fields (with `messages` holding only what the
/// reference does not cover) plus the reference under a field number `ContextPlan`
/// does not use, so one blob decodes as either.
#[derive(Clone, PartialEq, prost::Message)]
struct RefField {
    #[prost(message, optional, tag = "100")]
    history: Option<HistoryRef>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredPlan {
    pub plan: ContextPlan,
    pub history: Option<HistoryRef>,
}

impl StoredPlan {
    /// A plan stored as sent (nothing referenced).
    pub fn full(plan: ContextPlan) -> Self {
        Self {
            plan,
            history: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = self.plan.encode_to_vec();
        RefField {
            history: self.history,
        }
        .encode(&mut buf)
        .expect("a Vec grows");
        buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(Self {
            plan: ContextPlan::decode(bytes)?,
            history: RefField::decode(bytes)?.history,
        })
    }
}

/// One message of a conversation as the expansion needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanMessage {
    pub seq: i64,
    pub id: String,
    pub role: i32,
    pub superseded: bool,
    pub superseded_mark: Option<i64>,
    pub ledger: TokenLedger,
}

impl SpanMessage {
    /// Part of the history offered to the model for the message at `end_seq`.
    fn visible_at(&self, end_seq: i64) -> bool {
        !self.superseded || self.superseded_mark.is_some_and(|k| k > end_seq)
    }
}

/// The role a history entry gets (the chat service sends everything but answers as
/// user turns).
fn entry_role(role: i32) -> i32 {
    if role == Role::Assistant as i32 {
        Role::Assistant as i32
    } else {
        Role::User as i32
    }
}

/// Counts a compaction adds to messages' ledgers: (message id, model, tokens).
pub type LedgerAddition = (String, String, u32);

/// The first history entry of a full plan, when it has history to reference.
pub fn first_history_id(plan: &ContextPlan) -> Option<&str> {
    (plan.messages.len() >= 2).then(|| plan.messages[0].message_id.as_str())
}

/// Compacts `plan` against `span`: the conversation's messages (superseded ones too) in
/// position order, covering at least its first history entry through the message
/// answered (its last entry). `None` when the plan cannot be referenced exactly; then it
/// is stored as sent.
pub fn compact(
    plan: &ContextPlan,
    span: &[SpanMessage],
) -> Option<(StoredPlan, Vec<LedgerAddition>)> {
    let (current, history) = plan.messages.split_last()?;
    let first = history.first()?;
    let first_seq = span.iter().find(|m| m.id == first.message_id)?.seq;
    let end_seq = span.iter().find(|m| m.id == current.message_id)?.seq;
    if end_seq <= first_seq || end_seq - first_seq > MAX_REFERENCED_SPAN {
        return None;
    }
    let seen: Vec<&SpanMessage> = span
        .iter()
        .filter(|m| m.seq >= first_seq && m.seq < end_seq && m.visible_at(end_seq))
        .collect();
    if seen.len() != history.len() {
        return None;
    }
    let mut additions = Vec::new();
    for (m, e) in seen.iter().zip(history) {
        if m.id != e.message_id || entry_role(m.role) != e.role {
            return None;
        }
        match m.ledger.get(&plan.model) {
            Some(t) if t == e.tokens => {}
            Some(_) => return None,
            None if m.ledger.entries.len() < MAX_LEDGER_MODELS => {
                additions.push((m.id.clone(), plan.model.clone(), e.tokens));
            }
            None => return None,
        }
    }
    let mut stored = plan.clone();
    stored.messages = vec![current.clone()];
    Some((
        StoredPlan {
            plan: stored,
            history: Some(HistoryRef { first_seq, end_seq }),
        },
        additions,
    ))
}

/// The plan as it was sent: the referenced history entries, then the stored ones.
/// `span` covers at least `history.first_seq..history.end_seq`.
pub fn expand(stored: StoredPlan, span: &[SpanMessage]) -> ContextPlan {
    let Some(h) = stored.history else {
        return stored.plan;
    };
    let mut plan = stored.plan;
    let mut messages: Vec<ContextMessage> = span
        .iter()
        .filter(|m| m.seq >= h.first_seq && m.seq < h.end_seq && m.visible_at(h.end_seq))
        .map(|m| ContextMessage {
            message_id: m.id.clone(),
            role: entry_role(m.role),
            tokens: m.ledger.get(&plan.model).unwrap_or_default(),
        })
        .collect();
    messages.append(&mut plan.messages);
    plan.messages = messages;
    plan
}

/// Adds `(model, tokens)` to a ledger unless it has that model or is full.
pub fn add_to_ledger(ledger: &mut TokenLedger, model: &str, tokens: u32) {
    if ledger.get(model).is_none() && ledger.entries.len() < MAX_LEDGER_MODELS {
        ledger.entries.push(LedgerEntry {
            model: model.to_owned(),
            tokens,
        });
    }
}

/// Compacts every full plan of one conversation whose messages are `span` (all of
/// them, in order, with their stored plans): the one-time migration of rows written
/// before plans were stored by reference. Returns the new plans (message index, plan)
/// and the ledgers that changed (message index).
pub fn compact_conversation(
    span: &mut [SpanMessage],
    plans: &[Option<StoredPlan>],
) -> (Vec<(usize, StoredPlan)>, Vec<usize>) {
    let mut new_plans = Vec::new();
    let mut touched = std::collections::BTreeSet::new();
    for (i, stored) in plans.iter().enumerate() {
        let Some(StoredPlan {
            plan,
            history: None,
        }) = stored
        else {
            continue;
        };
        if first_history_id(plan).is_none() {
            continue;
        }
        let Some((compacted, additions)) = compact(plan, span) else {
            continue;
        };
        for (id, model, tokens) in additions {
            if let Some(j) = span.iter().position(|m| m.id == id) {
                add_to_ledger(&mut span[j].ledger, &model, tokens);
                touched.insert(j);
            }
        }
        new_plans.push((i, compacted));
    }
    (new_plans, touched.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: i64, role: Role) -> SpanMessage {
        SpanMessage {
            seq,
            id: format!("m{seq}"),
            role: role as i32,
            superseded: false,
            superseded_mark: None,
            ledger: TokenLedger::default(),
        }
    }

    fn entry(id: &str, role: Role, tokens: u32) -> ContextMessage {
        ContextMessage {
            message_id: id.into(),
            role: role as i32,
            tokens,
        }
    }

    fn plan(entries: Vec<ContextMessage>) -> ContextPlan {
        ContextPlan {
            model: "gpt".into(),
            context_window: 1000,
            messages: entries,
            total_prompt_tokens: 42,
            notes: vec!["a note".into()],
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_through_the_reference() {
        let span = vec![
            msg(0, Role::User),
            msg(1, Role::Assistant),
            msg(2, Role::User),
            msg(3, Role::Assistant),
        ];
        let full = plan(vec![
            entry("m0", Role::User, 10),
            entry("m1", Role::Assistant, 20),
            entry("m2", Role::User, 30),
        ]);
        let (stored, additions) = compact(&full, &span).expect("compacts");
        assert_eq!(stored.plan.messages.len(), 1);
        assert_eq!(additions.len(), 2);
        let bytes = stored.encode();
        assert_eq!(StoredPlan::decode(&bytes).unwrap(), stored);
        // An older reader decodes the same bytes as a plain plan.
        assert_eq!(ContextPlan::decode(bytes.as_slice()).unwrap(), stored.plan);

        let mut span = span;
        for (id, model, tokens) in additions {
            let m = span.iter_mut().find(|m| m.id == id).unwrap();
            add_to_ledger(&mut m.ledger, &model, tokens);
        }
        assert_eq!(expand(stored, &span), full);
    }

    #[test]
    fn superseded_before_the_answer_is_skipped_and_after_is_kept() {
        // m1 (an answer) was regenerated before m2 was appended (mark 2); m0 was
        // superseded by an edit much later (mark 9).
        let mut span = vec![
            msg(0, Role::User),
            msg(1, Role::Assistant),
            msg(2, Role::Assistant),
            msg(3, Role::User),
        ];
        span[1].superseded = true;
        span[1].superseded_mark = Some(2);
        span[0].superseded = true;
        span[0].superseded_mark = Some(9);
        let full = plan(vec![
            entry("m0", Role::User, 5),
            entry("m2", Role::Assistant, 6),
            entry("m3", Role::User, 7),
        ]);
        let (stored, additions) = compact(&full, &span).unwrap();
        for (id, model, tokens) in additions {
            let m = span.iter_mut().find(|m| m.id == id).unwrap();
            add_to_ledger(&mut m.ledger, &model, tokens);
        }
        assert_eq!(expand(stored, &span), full);
    }

    #[test]
    fn plans_that_do_not_match_the_span_stay_as_sent() {
        let mut span = vec![
            msg(0, Role::User),
            msg(1, Role::Assistant),
            msg(2, Role::User),
        ];
        // A message the plan skipped although it was visible (a concurrent append).
        let skipping = plan(vec![entry("m0", Role::User, 1), entry("m2", Role::User, 1)]);
        assert!(compact(&skipping, &span).is_none());
        // A count that disagrees with the one kept for this model.
        add_to_ledger(&mut span[0].ledger, "gpt", 99);
        let full = plan(vec![
            entry("m0", Role::User, 1),
            entry("m1", Role::Assistant, 1),
            entry("m2", Role::User, 1),
        ]);
        assert!(compact(&full, &span).is_none());
        // Without history there is nothing to reference.
        assert!(compact(&plan(vec![entry("m2", Role::User, 1)]), &span).is_none());
    }

    #[test]
    fn a_ledger_keeps_one_count_per_model_up_to_its_limit() {
        let mut l = TokenLedger::default();
        for i in 0..6 {
            add_to_ledger(&mut l, &format!("model-{i}"), i);
        }
        add_to_ledger(&mut l, "model-0", 77);
        assert_eq!(l.entries.len(), MAX_LEDGER_MODELS);
        assert_eq!(l.get("model-0"), Some(0));
        assert_eq!(l.get("model-5"), None);
    }
}
