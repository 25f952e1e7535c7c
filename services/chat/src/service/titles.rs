//! Conversation titles: the title model when the provider has one, else the first words
//! of the first message. The title is made beside the first answer and stored with it.

use std::sync::Arc;
use std::time::Duration;

use confab_common::Identity;
use confab_proto::chat::v1 as chat;
use futures::StreamExt;

use super::Chat;
use super::run::event;
use crate::provider::{ModelEvent, ModelProvider, ModelRequest, PromptMessage, Role, Usage};
use crate::registry::Generation;

const TITLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A conversation title and what making it cost.
pub struct Title {
    pub text: String,
    /// The title model, when one was called.
    pub model: Option<String>,
    /// Its tokens (reported, else counted), when one was called.
    pub usage: Option<Usage>,
}

/// A title for a conversation's first exchange: made in the background beside the
/// answer, or after it when the provider answers one request at a time.
pub(crate) enum PendingTitle {
    Running(tokio::task::JoinHandle<Title>),
    AfterAnswer(Arc<dyn ModelProvider>, String),
}

impl PendingTitle {
    pub(crate) fn spawn(provider: Arc<dyn ModelProvider>, first_message: String) -> Self {
        if provider.title_after_answer() {
            return Self::AfterAnswer(provider, first_message);
        }
        Self::Running(tokio::spawn(async move {
            make_title(provider.as_ref(), &first_message).await
        }))
    }

    async fn made(self) -> Option<Title> {
        match self {
            Self::Running(task) => task.await.ok(),
            Self::AfterAnswer(provider, message) => {
                Some(make_title(provider.as_ref(), &message).await)
            }
        }
    }
}

impl Chat {
    /// Waits (bounded) for the title, stores it and tells the client. Returns the title
    /// model's tokens, which count against the user's budget with the answer's.
    pub(crate) async fn settle_title(
        &self,
        id: &Identity,
        conversation_id: &str,
        pending: PendingTitle,
        g: &Generation,
    ) -> u32 {
        let Ok(Some(made)) = tokio::time::timeout(TITLE_TIMEOUT, pending.made()).await else {
            return 0;
        };
        let mut tokens = 0;
        if let (Some(model), Some(u)) = (&made.model, made.usage) {
            tokens = u.total_tokens;
            self.metrics
                .tokens(model, u.prompt_tokens, u.completion_tokens);
        }
        match self
            .conversations
            .set_title(id, conversation_id, &made.text)
            .await
        {
            Ok(()) => {
                g.publish(event(chat::chat_event::Event::TitleUpdated(
                    chat::TitleUpdated { title: made.text },
                )));
            }
            Err(e) => tracing::warn!(error = %e, "could not name the conversation"),
        }
        tokens
    }
}

/// A conversation title from its first message: the title model when there is one,
/// else (or when it fails) the message's first words.
pub async fn make_title(provider: &dyn ModelProvider, first_message: &str) -> Title {
    let fallback = heuristic_title(first_message);
    let Some(model) = provider.title_model() else {
        return Title {
            text: fallback,
            model: None,
            usage: None,
        };
    };
    const INSTRUCTION: &str = "Write a short title (at most 6 words) for a conversation that starts with the user's message. Reply with the title only, no quotes.";
    let message: String = first_message.chars().take(2000).collect();
    let request = ModelRequest {
        model: model.clone(),
        messages: vec![
            PromptMessage::text(Role::System, INSTRUCTION),
            PromptMessage::text(Role::User, message.clone()),
        ],
        max_output_tokens: 20,
    };
    let mut reported: Option<Usage> = None;
    let mut out = String::new();
    let mut called = false;
    let collect = async {
        let mut s = provider.stream(request).await.ok()?;
        called = true;
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ModelEvent::Delta(t)) => out.push_str(&t),
                Ok(ModelEvent::Usage(u)) => reported = Some(u),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        Some(())
    };
    let ok = matches!(
        tokio::time::timeout(TITLE_TIMEOUT, collect).await,
        Ok(Some(()))
    );
    let usage = called.then(|| {
        reported.filter(|u| u.total_tokens > 0).unwrap_or_else(|| {
            let prompt = provider.count_tokens(&model, INSTRUCTION)
                + provider.count_tokens(&model, &message);
            let completion = provider.count_tokens(&model, &out);
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            }
        })
    });
    let text = if ok { clean_title(&out) } else { String::new() };
    Title {
        text: if text.is_empty() { fallback } else { text },
        model: called.then_some(model),
        usage,
    }
}

fn clean_title(t: &str) -> String {
    let t = t.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let t = t
        .trim()
        .trim_start_matches("Title:")
        .trim()
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '*' || c == '#' || c == '.')
        .trim();
    t.chars().take(80).collect()
}

pub fn heuristic_title(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().take(8).collect();
    let mut t = words.join(" ");
    if t.chars().count() > 60 {
        t = t.chars().take(60).collect::<String>().trim_end().to_owned();
        t.push('…');
    }
    if t.is_empty() { "New chat".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_from_first_words() {
        assert_eq!(
            heuristic_title("\n  How do I  bake bread at home quickly please now\n"),
            "How do I bake bread at home quickly"
        );
        assert_eq!(heuristic_title(""), "New chat");
        assert_eq!(clean_title("\"Baking Bread.\"\nmore"), "Baking Bread");
    }
}
