//! Settlement: the answer's final save, its usage, the title, the quota given back, and
//! the last event (`Completed` or `Failed`).

use confab_common::ServiceError;
use confab_proto::chat::v1 as chat;
use confab_proto::conversation::v1 as conv;

use super::Chat;
use super::run::event;
use super::titles::PendingTitle;
use super::turn::Turn;
use crate::error::ChatError;
use crate::provider::{Finish, ProviderError, Usage};
use crate::registry::Generation;

/// How the run loop ended.
pub(crate) struct Outcome {
    pub text: String,
    /// As reported by the provider; counted when it reported none.
    pub usage: Option<Usage>,
    pub finish: Finish,
    pub stopped: bool,
    pub failure: Option<ProviderError>,
}

impl Chat {
    /// Stores the partial answer in the background (bounded by `save_interval`).
    pub(crate) fn save_progress(&self, turn: &Turn, text: &str) {
        let conversations = self.conversations.clone();
        let identity = turn.identity.clone();
        let update = conv::UpdateMessageRequest {
            conversation_id: turn.conversation_id.clone(),
            message_id: turn.stored.assistant_message_id.clone(),
            content: Some(text.to_owned()),
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Err(e) = conversations.update(&identity, update).await {
                tracing::debug!(error = %e, "progress save failed");
            }
        });
    }

    /// Finishes a turn: what arrived is stored (also when stopped or failed), usage is
    /// published, the title settled, the quota released with the tokens used, and the
    /// last event published.
    pub(crate) async fn settle(
        &self,
        turn: Turn,
        outcome: Outcome,
        title: Option<PendingTitle>,
        g: &Generation,
    ) {
        let Outcome {
            text,
            usage,
            finish,
            stopped,
            failure,
        } = outcome;
        let id = &turn.identity;
        let plan = &turn.stored.plan;
        let usage = usage.unwrap_or_else(|| {
            let completion = turn.provider.count_tokens(&turn.spec.id, &text);
            let prompt = if failure.is_some() && text.is_empty() {
                0
            } else {
                plan.context.total_prompt_tokens
            };
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            }
        });
        // What the user reads about a failure passes the public-message rule of the
        // error table (no library errors or panic text); the log has the details.
        let failure = failure.map(|e| {
            tracing::warn!(error = %e, model = %turn.spec.id, "generation failed");
            let public = ChatError::Provider(e.clone()).public_message();
            (e, public)
        });
        let (status, error_message) = match (&failure, stopped) {
            (Some((_, public)), _) => (conv::MessageStatus::Failed, Some(public.clone())),
            (None, true) => (conv::MessageStatus::Stopped, None),
            (None, false) => (conv::MessageStatus::Complete, None),
        };
        let saved = self
            .conversations
            .update(
                id,
                conv::UpdateMessageRequest {
                    conversation_id: turn.conversation_id.clone(),
                    message_id: turn.stored.assistant_message_id.clone(),
                    content: Some(text),
                    status: Some(status as i32),
                    usage: Some(conv::TokenUsage {
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                        total_tokens: usage.total_tokens,
                    }),
                    context: Some(plan.context.clone()),
                    model: None,
                    error_message,
                },
            )
            .await;
        self.metrics
            .tokens(&turn.spec.id, usage.prompt_tokens, usage.completion_tokens);

        let chat_usage = chat::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
        };
        if usage.total_tokens > 0 {
            g.publish(event(chat::chat_event::Event::Usage(chat_usage)));
        }
        // The title's tokens count against the user's budget too: one release covers both.
        let title_tokens = match title {
            Some(t) => self.settle_title(id, &turn.conversation_id, t, g).await,
            None => 0,
        };
        let assistant_message_id = turn.stored.assistant_message_id.clone();
        turn.lease
            .release(usage.total_tokens.saturating_add(title_tokens))
            .await;

        let last = if let Err(e) = saved {
            tracing::error!(error = %e, "could not store the answer");
            chat::chat_event::Event::Failed(chat::Failed {
                code: chat::FailureCode::Internal as i32,
                message: "the answer could not be saved; try again".into(),
                retryable: true,
                retry_after_seconds: 0,
                assistant_message_id,
            })
        } else if let Some((e, message)) = failure {
            chat::chat_event::Event::Failed(chat::Failed {
                code: e.failure_code() as i32,
                message,
                retryable: e.retryable(),
                retry_after_seconds: e.retry_after_seconds().unwrap_or(0),
                assistant_message_id,
            })
        } else {
            chat::chat_event::Event::Completed(chat::Completed {
                assistant_message_id,
                finish_reason: if stopped {
                    chat::FinishReason::Stopped
                } else {
                    match finish {
                        Finish::Stop => chat::FinishReason::Stop,
                        Finish::Length => chat::FinishReason::Length,
                        Finish::ContentFilter => chat::FinishReason::ContentFilter,
                    }
                } as i32,
                usage: Some(chat_usage),
            })
        };
        g.publish(event(last));
    }
}
