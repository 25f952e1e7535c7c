//! The generation run loop: publishes `Started`, relays the model's deltas once per
//! display frame, saves progress now and then, renews the stream lease, and stops when
//! asked; [`Chat::settle`] then finishes the turn.

use std::sync::Arc;
use std::time::Duration;

use confab_proto::chat::v1 as chat;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::Chat;
use super::settle::Outcome;
use super::titles::PendingTitle;
use super::turn::Turn;
use crate::provider::{Finish, ModelEvent, ProviderError, Usage};
use crate::registry::{DetachedSlot, Generation};

/// Largest text of one Delta event built from deltas that were already waiting.
const MAX_COALESCED_BYTES: usize = 4096;

/// How often the answer's text goes to the client while the model is fast: once per
/// display frame (60 Hz). The first text goes at once; later deltas arriving within a
/// frame of the last event travel together, so a fast model costs one event per frame
/// instead of one per token, and nobody sees the difference.
const FRAME: Duration = Duration::from_millis(16);

/// A spawned task that is aborted when its handle is dropped.
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn event(e: chat::chat_event::Event) -> chat::ChatEvent {
    chat::ChatEvent {
        event: Some(e),
        ..Default::default()
    }
}

fn delta(text: &str) -> chat::ChatEvent {
    event(chat::chat_event::Event::Delta(chat::TokenDelta {
        text: text.to_owned(),
    }))
}

/// The answer as it streams: what was published, and deltas held for the next frame.
struct Relay {
    text: String,
    pending: String,
    first_token: bool,
    last_sent: Option<Instant>,
    /// When the held deltas go out (set while some are held).
    flush_at: Option<Instant>,
    saved_len: usize,
    last_save: Instant,
}

impl Relay {
    /// Deltas were added to `pending`: sent now unless the last event went out less
    /// than a frame ago (then at the end of that frame) and there is little text held.
    fn delta_received(&mut self, chat: &Chat, turn: &Turn, g: &Generation) {
        let due = self.last_sent.is_none_or(|at| at.elapsed() >= FRAME);
        if due || self.pending.len() >= MAX_COALESCED_BYTES {
            self.flush(chat, turn, g);
        } else if self.flush_at.is_none() {
            self.flush_at = self.last_sent.map(|at| at + FRAME);
        }
    }

    /// Publishes the held deltas as one event (and saves progress now and then).
    fn flush(&mut self, chat: &Chat, turn: &Turn, g: &Generation) {
        self.flush_at = None;
        if self.pending.is_empty() {
            return;
        }
        if self.first_token {
            self.first_token = false;
            chat.metrics
                .time_to_first_token(&turn.spec.id, turn.received.elapsed().as_secs_f64());
        }
        self.text.push_str(&self.pending);
        g.publish(delta(&self.pending));
        self.pending.clear();
        self.last_sent = Some(Instant::now());
        if self.last_save.elapsed() >= chat.config.save_interval && self.text.len() > self.saved_len
        {
            self.last_save = Instant::now();
            self.saved_len = self.text.len();
            chat.save_progress(turn, &self.text);
        }
    }
}

impl Chat {
    /// Registers the generation, publishes `Started` and runs it in its own task.
    pub(crate) fn start(self: &Arc<Self>, turn: Turn) -> Arc<Generation> {
        let g = self.registry.start(
            turn.stored.generation_id.clone(),
            turn.identity.user_id.clone(),
            turn.conversation_id.clone(),
            turn.detached.is_some(),
        );
        g.publish(event(chat::chat_event::Event::Started(chat::Started {
            user_message_id: turn.stored.user_message.id.clone(),
            assistant_message_id: turn.stored.assistant_message_id.clone(),
            model: turn.spec.id.clone(),
            provider: turn.provider.name().to_owned(),
            embedded_model: turn.spec.embedded,
            context: Some(turn.stored.plan.context.clone()),
            conversation_created: turn.created,
        })));
        let this = self.clone();
        let g2 = g.clone();
        tokio::spawn(async move {
            let slot = this.run(turn, &g2).await;
            this.registry.finish(&g2);
            drop((slot, g2));
            // Nobody may ever re-attach: drop it from the registry when its time is up.
            let registry = this.registry.clone();
            drop(this);
            tokio::time::sleep(registry.ttl()).await;
            registry.expire();
        });
        g
    }

    /// Runs the generation to its end; gives back the detached slot to drop after finish.
    async fn run(self: &Arc<Self>, mut turn: Turn, g: &Generation) -> Option<DetachedSlot> {
        let detached = turn.detached.take();
        let title = turn
            .title_from
            .take()
            .map(|text| PendingTitle::spawn(turn.provider.clone(), text));

        let mut text = String::new();
        if !turn.stored.plan.unseen_images.is_empty() {
            let note = format!(
                "_I can't see images: {} reads text only, so I could not look at {}._\n\n",
                turn.spec.display_name,
                turn.stored.plan.unseen_images.join(", ")
            );
            g.publish(delta(&note));
            text.push_str(&note);
        }

        let mut out = Relay {
            saved_len: text.len(),
            text,
            pending: String::new(),
            first_token: true,
            last_sent: None,
            flush_at: None,
            last_save: Instant::now(),
        };
        let mut usage: Option<Usage> = None;
        let mut finish = Finish::Stop;
        let mut stopped = false;
        let mut failure: Option<ProviderError> = None;
        let lease = turn.lease.lease();
        let renew_every = Duration::from_secs(u64::from(lease.ttl_seconds.max(2) / 2));
        let renewing = !lease.lease_id.is_empty();
        let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);

        let stream = tokio::select! {
            _ = g.cancel.cancelled() => None,
            s = &mut turn.stored.upstream.0 => Some(s.unwrap_or_else(|e| {
                Err(ProviderError::Internal(format!("model call panicked: {e}")))
            })),
        };
        turn.stored.upstream.0.abort();
        match stream {
            None => stopped = true,
            Some(Err(e)) => failure = Some(e),
            Some(Ok(mut stream)) => {
                // An event read ahead while coalescing deltas, handled next.
                let mut carry = None;
                loop {
                    let ev = match carry.take() {
                        Some(ev) => ev,
                        None => tokio::select! {
                            biased;
                            _ = g.cancel.cancelled() => { stopped = true; break; }
                            _ = tokio::time::sleep_until(out.flush_at.unwrap_or_else(Instant::now)),
                                if out.flush_at.is_some() => {
                                out.flush(self, &turn, g);
                                continue;
                            }
                            ev = stream.next() => ev,
                            _ = renew.tick(), if renewing => {
                                self.quota.renew(&turn.identity, turn.lease.lease());
                                continue;
                            }
                        },
                    };
                    match ev {
                        Some(Ok(ModelEvent::Delta(t))) => {
                            out.pending.push_str(&t);
                            // Deltas already waiting join it (fewer frames when the
                            // upstream is faster than the client).
                            while out.pending.len() < MAX_COALESCED_BYTES {
                                match stream.next().now_or_never() {
                                    Some(Some(Ok(ModelEvent::Delta(more)))) => {
                                        out.pending.push_str(&more)
                                    }
                                    Some(other) => {
                                        carry = Some(other);
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            out.delta_received(self, &turn, g);
                        }
                        Some(Ok(ModelEvent::Usage(u))) => usage = Some(u),
                        Some(Ok(ModelEvent::Finished(f))) => finish = f,
                        Some(Err(e)) => {
                            failure = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
        // What arrived is kept, also when stopped or failed.
        out.flush(self, &turn, g);
        // The upstream stream is dropped here: the HTTP response or decode thread ends.
        let outcome = Outcome {
            text: out.text,
            usage,
            finish,
            stopped,
            failure,
        };
        self.settle(turn, outcome, title, g).await;
        detached
    }
}
