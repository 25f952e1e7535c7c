//! What each message in the chat view is, and how a stream's events find the messages
//! they change: the user message the server has just stored, and the answer being
//! streamed. The kind is explicit so no rule depends on the shape of an id.

/// The kind of a message in the chat view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Stored on the server under this id (loaded, or confirmed by the stream).
    Stored(String),
    /// Typed in this tab and shown before the server stored it; `local` keeps two of
    /// them apart until the stream's `Started` names the stored one.
    PendingUser { local: u64 },
    /// An edited user message being resent: the server stores the new text under a new
    /// id (`Started` brings it); `replaces` is the message it supersedes.
    PendingEdit { replaces: String },
    /// The answer streaming into this tab; `id` arrives with `Started` (or is known up
    /// front when re-attaching to a stored, still streaming answer).
    Live { id: Option<String> },
    /// An answer whose stream ended before the server named it: shown, never stored.
    Unsaved { local: u64 },
}

impl MessageKind {
    /// The server's id, when it has one.
    pub fn stored_id(&self) -> Option<&str> {
        match self {
            MessageKind::Stored(id) | MessageKind::Live { id: Some(id) } => Some(id),
            _ => None,
        }
    }

    /// Unique within one view: the list key and the element id (`msg-{key}`).
    pub fn key(&self) -> String {
        match self {
            MessageKind::Stored(id) | MessageKind::Live { id: Some(id) } => id.clone(),
            MessageKind::PendingUser { local } => format!("local-{local}"),
            MessageKind::PendingEdit { replaces } => format!("local-edit-{replaces}"),
            MessageKind::Live { id: None } => "live-answer".to_string(),
            MessageKind::Unsaved { local } => format!("unsaved-{local}"),
        }
    }

    /// A user message the server has not confirmed yet (new or edited).
    pub fn is_pending_user(&self) -> bool {
        matches!(
            self,
            MessageKind::PendingUser { .. } | MessageKind::PendingEdit { .. }
        )
    }

    pub fn is_stored(&self) -> bool {
        matches!(self, MessageKind::Stored(_))
    }
}

/// Anything in the view that has a kind (the app's message type; tests use kinds alone).
pub trait HasKind {
    fn kind(&self) -> &MessageKind;
}

impl HasKind for MessageKind {
    fn kind(&self) -> &MessageKind {
        self
    }
}

/// The user message a stream's `Started` confirms: the newest pending one.
pub fn pending_user_index<T: HasKind>(items: &[T]) -> Option<usize> {
    items.iter().rposition(|m| m.kind().is_pending_user())
}

/// The message the live answer writes into: the one streaming in this tab, or (when
/// re-attaching) the stored message with the answer's id.
pub fn live_index<T: HasKind>(items: &[T], assistant_message_id: &str) -> Option<usize> {
    items.iter().rposition(|m| match m.kind() {
        MessageKind::Live { .. } => true,
        MessageKind::Stored(id) => !assistant_message_id.is_empty() && id == assistant_message_id,
        _ => false,
    })
}

/// A new (not edited) user message the server refused before storing it: the last item,
/// if it is one. Its text goes back to the composer.
pub fn unsent_index<T: HasKind>(items: &[T]) -> Option<usize> {
    let last = items.len().checked_sub(1)?;
    matches!(items[last].kind(), MessageKind::PendingUser { .. }).then_some(last)
}

/// The kind a live answer keeps once its stream is over: stored when the server named
/// it, otherwise unsaved (`local` keeps it apart from the next live answer).
pub fn settled(kind: &MessageKind, local: u64) -> Option<MessageKind> {
    match kind {
        MessageKind::Live { id: Some(id) } => Some(MessageKind::Stored(id.clone())),
        MessageKind::Live { id: None } => Some(MessageKind::Unsaved { local }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str) -> MessageKind {
        MessageKind::Stored(id.to_string())
    }

    #[test]
    fn started_confirms_the_newest_pending_user_message() {
        let v = vec![
            stored("u1"),
            stored("a1"),
            MessageKind::PendingUser { local: 3 },
            MessageKind::Live { id: None },
        ];
        assert_eq!(pending_user_index(&v), Some(2));
        let edit = vec![
            stored("u1"),
            MessageKind::PendingEdit {
                replaces: "u1".into(),
            },
        ];
        assert_eq!(pending_user_index(&edit), Some(1));
        assert_eq!(pending_user_index(&[stored("u1"), stored("a1")]), None);
    }

    #[test]
    fn the_live_answer_is_found_by_kind_or_by_its_stored_id() {
        let fresh = vec![
            stored("a0"),
            MessageKind::PendingUser { local: 1 },
            MessageKind::Live { id: None },
        ];
        assert_eq!(live_index(&fresh, ""), Some(2));
        let named = vec![
            stored("a0"),
            MessageKind::Live {
                id: Some("a1".into()),
            },
        ];
        assert_eq!(live_index(&named, "a1"), Some(1));
        // Re-attach after a refresh: the stored, still streaming answer.
        let reattach = vec![stored("u1"), stored("a1")];
        assert_eq!(live_index(&reattach, "a1"), Some(1));
        // A fresh send with nothing live yet: a new message is needed, never an old answer.
        assert_eq!(live_index(&reattach, ""), None);
        let after_failure = vec![
            MessageKind::Unsaved { local: 4 },
            MessageKind::PendingUser { local: 5 },
        ];
        assert_eq!(live_index(&after_failure, ""), None);
    }

    #[test]
    fn only_a_new_last_user_message_is_unsent() {
        assert_eq!(
            unsent_index(&[stored("a0"), MessageKind::PendingUser { local: 1 }]),
            Some(1)
        );
        assert_eq!(
            unsent_index(&[
                stored("u1"),
                MessageKind::PendingEdit {
                    replaces: "u1".into()
                }
            ]),
            None
        );
        assert_eq!(
            unsent_index(&[
                MessageKind::PendingUser { local: 1 },
                MessageKind::Live { id: None }
            ]),
            None
        );
        assert_eq!(unsent_index::<MessageKind>(&[]), None);
    }

    #[test]
    fn a_finished_live_answer_is_stored_or_unsaved() {
        assert_eq!(
            settled(
                &MessageKind::Live {
                    id: Some("a1".into())
                },
                9
            ),
            Some(stored("a1"))
        );
        assert_eq!(
            settled(&MessageKind::Live { id: None }, 9),
            Some(MessageKind::Unsaved { local: 9 })
        );
        assert_eq!(settled(&stored("a1"), 9), None);
        assert_eq!(settled(&MessageKind::PendingUser { local: 1 }, 9), None);
    }

    #[test]
    fn keys_are_distinct_per_kind() {
        let keys: Vec<String> = [
            stored("x"),
            MessageKind::PendingUser { local: 1 },
            MessageKind::PendingEdit {
                replaces: "x".into(),
            },
            MessageKind::Live { id: None },
            MessageKind::Unsaved { local: 1 },
        ]
        .iter()
        .map(MessageKind::key)
        .collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(
            MessageKind::Live {
                id: Some("x".into())
            }
            .key(),
            "x"
        );
        assert_eq!(
            MessageKind::Live {
                id: Some("x".into())
            }
            .stored_id(),
            Some("x")
        );
        assert_eq!(MessageKind::PendingUser { local: 1 }.stored_id(), None);
    }
}
