//! Event sequencing for streamed answers and the re-attach decision after a refresh.
//!
//! Every event of a generation carries a sequence number (1, 2, 3…). The client keeps the
//! last one it applied so a replay (Attach) or a duplicate never doubles the text, and so
//! a dropped connection can resume with `after_sequence = last_sequence`.

/// The wire events, reduced to what the UI needs.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Started {
        assistant_message_id: String,
        model: String,
        embedded: bool,
    },
    Delta(String),
    Title(String),
    Usage {
        total_tokens: u32,
    },
    Completed {
        stopped: bool,
    },
    Failed {
        message: String,
        retryable: bool,
        retry_after_seconds: u32,
        rate_limited: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnswerStatus {
    Streaming,
    Complete,
    Stopped,
    Failed {
        message: String,
        retryable: bool,
        retry_after_seconds: u32,
        rate_limited: bool,
    },
}

/// The assistant answer being built from a stream of events.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveAnswer {
    pub generation_id: String,
    pub assistant_message_id: String,
    pub text: String,
    pub status: AnswerStatus,
    pub model: String,
    pub embedded: bool,
    pub title: Option<String>,
    last_sequence: u64,
    /// Re-attached from sequence 0: the stored partial text is replaced by the replay.
    replace_on_first_event: bool,
}

/// What `apply` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Already seen (sequence not above the last one) or of another generation.
    Ignored,
}

impl LiveAnswer {
    /// A fresh send: the generation id arrives with the first event.
    pub fn new() -> Self {
        Self {
            generation_id: String::new(),
            assistant_message_id: String::new(),
            text: String::new(),
            status: AnswerStatus::Streaming,
            model: String::new(),
            embedded: false,
            title: None,
            last_sequence: 0,
            replace_on_first_event: false,
        }
    }

    /// After a refresh: the stored message shows `stored_text` until the replay from
    /// sequence 0 starts, which then rebuilds the text from the beginning.
    pub fn reattach(generation_id: &str, assistant_message_id: &str, stored_text: &str) -> Self {
        Self {
            generation_id: generation_id.to_string(),
            assistant_message_id: assistant_message_id.to_string(),
            text: stored_text.to_string(),
            replace_on_first_event: true,
            ..Self::new()
        }
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn is_finished(&self) -> bool {
        self.status != AnswerStatus::Streaming
    }

    pub fn apply(&mut self, generation_id: &str, sequence: u64, event: &StreamEvent) -> Applied {
        if !self.generation_id.is_empty()
            && !generation_id.is_empty()
            && generation_id != self.generation_id
        {
            return Applied::Ignored;
        }
        if sequence != 0 && sequence <= self.last_sequence {
            return Applied::Ignored;
        }
        if self.generation_id.is_empty() {
            self.generation_id = generation_id.to_string();
        }
        if self.replace_on_first_event {
            self.replace_on_first_event = false;
            // A replay from the start: it carries the full text.
            if sequence <= 1 || matches!(event, StreamEvent::Started { .. }) {
                self.text.clear();
            }
        }
        self.last_sequence = self.last_sequence.max(sequence);
        match event {
            StreamEvent::Started {
                assistant_message_id,
                model,
                embedded,
            } => {
                if !assistant_message_id.is_empty() {
                    self.assistant_message_id = assistant_message_id.clone();
                }
                self.model = model.clone();
                self.embedded = *embedded;
            }
            StreamEvent::Delta(t) => self.text.push_str(t),
            StreamEvent::Title(t) => self.title = Some(t.clone()),
            StreamEvent::Usage { .. } => {}
            StreamEvent::Completed { stopped } => {
                self.status = if *stopped {
                    AnswerStatus::Stopped
                } else {
                    AnswerStatus::Complete
                };
            }
            StreamEvent::Failed {
                message,
                retryable,
                retry_after_seconds,
                rate_limited,
            } => {
                self.status = AnswerStatus::Failed {
                    message: message.clone(),
                    retryable: *retryable,
                    retry_after_seconds: *retry_after_seconds,
                    rate_limited: *rate_limited,
                };
            }
        }
        Applied::Applied
    }

    /// The stream ended (or broke) without a terminal event: where to resume from.
    pub fn resume_point(&self) -> Option<(String, u64)> {
        (!self.is_finished() && !self.generation_id.is_empty())
            .then(|| (self.generation_id.clone(), self.last_sequence))
    }
}

impl Default for LiveAnswer {
    fn default() -> Self {
        Self::new()
    }
}

/// The last stored message of a conversation, as far as re-attach cares.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTail<'a> {
    pub is_assistant: bool,
    pub is_streaming: bool,
    pub generation_id: &'a str,
}

/// After loading a conversation: the generation to re-attach to (from sequence 0), if the
/// last answer is still streaming.
pub fn reattach_target(last: Option<StoredTail<'_>>) -> Option<String> {
    let last = last?;
    (last.is_assistant && last.is_streaming && !last.generation_id.is_empty())
        .then(|| last.generation_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(s: &str) -> StreamEvent {
        StreamEvent::Delta(s.into())
    }

    #[test]
    fn builds_text_in_order_and_ignores_duplicates() {
        let mut a = LiveAnswer::new();
        let started = StreamEvent::Started {
            assistant_message_id: "m2".into(),
            model: "gpt".into(),
            embedded: true,
        };
        assert_eq!(a.apply("g1", 1, &started), Applied::Applied);
        assert_eq!(a.generation_id, "g1");
        assert!(a.embedded);
        a.apply("g1", 2, &delta("Hel"));
        a.apply("g1", 3, &delta("lo"));
        assert_eq!(a.apply("g1", 3, &delta("lo")), Applied::Ignored);
        assert_eq!(a.apply("g1", 2, &delta("Hel")), Applied::Ignored);
        assert_eq!(a.apply("other", 4, &delta("x")), Applied::Ignored);
        assert_eq!(a.text, "Hello");
        assert_eq!(a.resume_point(), Some(("g1".into(), 3)));
        a.apply("g1", 4, &StreamEvent::Title("Greeting".into()));
        a.apply("g1", 5, &StreamEvent::Completed { stopped: false });
        assert_eq!(a.status, AnswerStatus::Complete);
        assert_eq!(a.title.as_deref(), Some("Greeting"));
        assert_eq!(a.resume_point(), None);
    }

    #[test]
    fn reattach_from_zero_replaces_the_stored_partial_text() {
        let mut a = LiveAnswer::reattach("g1", "m2", "Hel");
        assert_eq!(a.text, "Hel");
        a.apply(
            "g1",
            1,
            &StreamEvent::Started {
                assistant_message_id: String::new(),
                model: "m".into(),
                embedded: false,
            },
        );
        assert_eq!(a.text, "");
        assert_eq!(a.assistant_message_id, "m2");
        a.apply("g1", 2, &delta("Hel"));
        a.apply("g1", 3, &delta("lo"));
        assert_eq!(a.text, "Hello");
    }

    #[test]
    fn resumed_replay_after_a_gap_keeps_text() {
        // Resuming with after_sequence=3: the first event is 4, the text so far stays.
        let mut a = LiveAnswer::new();
        a.apply(
            "g",
            1,
            &StreamEvent::Started {
                assistant_message_id: "m".into(),
                model: String::new(),
                embedded: false,
            },
        );
        a.apply("g", 2, &delta("a"));
        a.apply("g", 3, &delta("b"));
        a.apply("g", 4, &delta("c"));
        a.apply("g", 3, &delta("b"));
        assert_eq!(a.text, "abc");
    }

    #[test]
    fn stop_and_failure_are_terminal_states() {
        let mut a = LiveAnswer::new();
        a.apply("g", 1, &delta("part"));
        a.apply("g", 2, &StreamEvent::Completed { stopped: true });
        assert_eq!(a.status, AnswerStatus::Stopped);
        assert_eq!(a.text, "part");
        let mut b = LiveAnswer::new();
        b.apply(
            "g",
            1,
            &StreamEvent::Failed {
                message: "upstream 500".into(),
                retryable: true,
                retry_after_seconds: 0,
                rate_limited: false,
            },
        );
        assert!(matches!(
            b.status,
            AnswerStatus::Failed {
                retryable: true,
                ..
            }
        ));
        assert!(b.is_finished());
    }

    #[test]
    fn reattach_only_for_a_streaming_assistant_tail_with_a_generation() {
        let t = |a, s, g| {
            Some(StoredTail {
                is_assistant: a,
                is_streaming: s,
                generation_id: g,
            })
        };
        assert_eq!(reattach_target(t(true, true, "g1")), Some("g1".into()));
        assert_eq!(reattach_target(t(true, false, "g1")), None);
        assert_eq!(reattach_target(t(false, true, "g1")), None);
        assert_eq!(reattach_target(t(true, true, "")), None);
        assert_eq!(reattach_target(None), None);
    }
}
