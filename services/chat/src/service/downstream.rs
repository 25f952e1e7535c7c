//! Typed clients for the services chat calls (conversation, files, rate limit). Every call
//! goes through [`call`], the one place a downstream `Status` becomes a [`ChatError`].

use std::future::Future;

use confab_common::{GrpcChannel, Identity};
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::files::v1 as files;
use confab_proto::files::v1::file_service_client::FileServiceClient;
use confab_proto::ratelimit::v1 as rl;
use confab_proto::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient;

use crate::context::{FileInput, TextPart};
use crate::error::ChatError;

const HISTORY_PAGE: u32 = 200;
const HISTORY_MAX_PAGES: usize = 5;

/// Awaits a downstream call and maps its failure, naming the service.
async fn call<T>(
    service: &'static str,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ChatError> {
    f.await
        .map(tonic::Response::into_inner)
        .map_err(ChatError::downstream(service))
}

/// The conversation store's RPCs chat uses.
#[derive(Clone)]
pub(crate) struct Conversations(ConversationServiceClient<GrpcChannel>);

impl Conversations {
    pub(crate) fn new(channel: GrpcChannel) -> Self {
        Self(ConversationServiceClient::new(channel))
    }

    async fn call<T, F>(
        &self,
        rpc: impl FnOnce(ConversationServiceClient<GrpcChannel>) -> F,
    ) -> Result<T, ChatError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        call("conversation", rpc(self.0.clone())).await
    }

    pub(crate) async fn get(
        &self,
        id: &Identity,
        conversation_id: &str,
    ) -> Result<conv::Conversation, ChatError> {
        let req = id.request(conv::GetConversationRequest {
            conversation_id: conversation_id.to_owned(),
        });
        self.call(|mut c| async move { c.get_conversation(req).await })
            .await
    }

    pub(crate) async fn create(
        &self,
        id: &Identity,
        model: &str,
        system_prompt: &str,
    ) -> Result<conv::Conversation, ChatError> {
        let req = id.request(conv::CreateConversationRequest {
            title: String::new(),
            model: model.to_owned(),
            system_prompt: system_prompt.to_owned(),
        });
        self.call(|mut c| async move { c.create_conversation(req).await })
            .await
    }

    pub(crate) async fn delete(
        &self,
        id: &Identity,
        conversation_id: &str,
    ) -> Result<(), ChatError> {
        let req = id.request(conv::DeleteConversationRequest {
            conversation_id: conversation_id.to_owned(),
        });
        self.call(|mut c| async move { c.delete_conversation(req).await })
            .await
            .map(drop)
    }

    pub(crate) async fn set_title(
        &self,
        id: &Identity,
        conversation_id: &str,
        title: &str,
    ) -> Result<(), ChatError> {
        let req = id.request(conv::UpdateConversationRequest {
            conversation_id: conversation_id.to_owned(),
            title: Some(title.to_owned()),
            ..Default::default()
        });
        self.call(|mut c| async move { c.update_conversation(req).await })
            .await
            .map(drop)
    }

    pub(crate) async fn get_message(
        &self,
        id: &Identity,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<conv::Message, ChatError> {
        let req = id.request(conv::GetMessageRequest {
            conversation_id: conversation_id.to_owned(),
            message_id: message_id.to_owned(),
        });
        self.call(|mut c| async move { c.get_message(req).await })
            .await
    }

    pub(crate) async fn append(
        &self,
        id: &Identity,
        message: conv::AppendMessageRequest,
    ) -> Result<conv::Message, ChatError> {
        let req = id.request(message);
        self.call(|mut c| async move { c.append_message(req).await })
            .await
    }

    pub(crate) async fn update(
        &self,
        id: &Identity,
        update: conv::UpdateMessageRequest,
    ) -> Result<conv::Message, ChatError> {
        let req = id.request(update);
        self.call(|mut c| async move { c.update_message(req).await })
            .await
    }

    pub(crate) async fn supersede(
        &self,
        id: &Identity,
        conversation_id: &str,
        from_message_id: &str,
        inclusive: bool,
    ) -> Result<(), ChatError> {
        let req = id.request(conv::SupersedeMessagesRequest {
            conversation_id: conversation_id.to_owned(),
            from_message_id: from_message_id.to_owned(),
            inclusive,
        });
        self.call(|mut c| async move { c.supersede_messages(req).await })
            .await
            .map(drop)
    }

    /// Non-superseded messages, oldest first (the newest pages, at most), without their
    /// context plans.
    pub(crate) async fn history(
        &self,
        id: &Identity,
        conversation_id: &str,
    ) -> Result<Vec<conv::Message>, ChatError> {
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..HISTORY_MAX_PAGES {
            let req = id.request(conv::ListMessagesRequest {
                conversation_id: conversation_id.to_owned(),
                page_size: HISTORY_PAGE,
                page_token: std::mem::take(&mut token),
                include_superseded: false,
                newest_first: true,
                omit_context: true,
            });
            let page = self
                .call(|mut c| async move { c.list_messages(req).await })
                .await?;
            out.extend(page.messages);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        out.retain(|m| !m.superseded);
        out.reverse();
        Ok(out)
    }
}

/// Files attached to a message: metadata to store, and what the planner reads.
#[derive(Default)]
pub(crate) struct AttachedFiles {
    pub attachments: Vec<conv::Attachment>,
    pub inputs: Vec<FileInput>,
}

/// The file service's prompt parts.
#[derive(Clone)]
pub(crate) struct Files(FileServiceClient<GrpcChannel>);

impl Files {
    pub(crate) fn new(channel: GrpcChannel) -> Self {
        Self(FileServiceClient::new(channel))
    }

    /// Files → attachment metadata and planner input (NOT_FOUND for unknown ids).
    pub(crate) async fn prompt_parts(
        &self,
        id: &Identity,
        file_ids: &[String],
        vision: bool,
    ) -> Result<AttachedFiles, ChatError> {
        let mut out = AttachedFiles::default();
        if file_ids.is_empty() {
            return Ok(out);
        }
        let req = id.request(files::GetPromptPartsRequest {
            file_ids: file_ids.to_vec(),
            include_images: vision,
            max_image_side: 0,
        });
        let mut client = self.0.clone();
        let parts = call("files", client.get_prompt_parts(req)).await?;
        for f in parts.files {
            let info = f.file.unwrap_or_default();
            let is_image = info.kind == files::FileKind::Image as i32;
            out.attachments.push(conv::Attachment {
                file_id: info.id.clone(),
                filename: info.filename.clone(),
                mime_type: info.mime_type.clone(),
                size_bytes: info.size_bytes,
                is_image,
            });
            out.inputs.push(FileInput {
                file_id: info.id,
                filename: info.filename,
                text_parts: f
                    .text_parts
                    .into_iter()
                    .map(|p| TextPart {
                        label: p.label,
                        text: p.text,
                    })
                    .collect(),
                image: is_image.then(|| f.image.map(|i| i.data_url).unwrap_or_default()),
            });
        }
        Ok(out)
    }
}

/// A granted quota decision: the daily-token reservation and the stream lease.
#[derive(Default)]
pub(crate) struct Lease {
    pub subject: String,
    pub reservation_id: String,
    pub lease_id: String,
    pub ttl_seconds: u32,
}

impl Lease {
    /// Nothing to give back (the rate-limit service is not deployed).
    fn is_empty(&self) -> bool {
        self.reservation_id.is_empty() && self.lease_id.is_empty()
    }
}

/// The rate-limit service.
#[derive(Clone)]
pub(crate) struct Quota(RateLimitServiceClient<GrpcChannel>);

impl Quota {
    pub(crate) fn new(channel: GrpcChannel) -> Self {
        Self(RateLimitServiceClient::new(channel))
    }

    pub(crate) async fn get(&self, id: &Identity) -> Result<rl::Quota, ChatError> {
        let req = id.request(rl::GetQuotaRequest {
            subject: Some(rl::Subject {
                key: id.rate_limit_subject(),
            }),
        });
        let mut client = self.0.clone();
        call("rate-limit", client.get_quota(req)).await
    }

    /// One decision for the request, a stream lease and `estimated_tokens` reserved.
    pub(crate) async fn acquire(
        &self,
        id: &Identity,
        estimated_tokens: u32,
    ) -> Result<Lease, ChatError> {
        let subject = id.rate_limit_subject();
        let req = id.request(rl::AcquireRequest {
            subject: Some(rl::Subject {
                key: subject.clone(),
            }),
            estimated_tokens,
            open_stream: true,
            request_id: uuid::Uuid::now_v7().to_string(),
        });
        let mut client = self.0.clone();
        let resp = match client.acquire(req).await {
            Ok(r) => r.into_inner(),
            // A deployment without the rate-limit service (or an old one) still chats.
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::warn!("rate-limit service unimplemented; request admitted");
                return Ok(Lease {
                    subject,
                    reservation_id: String::new(),
                    lease_id: String::new(),
                    ttl_seconds: 0,
                });
            }
            Err(s) => return Err(ChatError::downstream("rate-limit")(s)),
        };
        if !resp.allowed {
            let message = if resp.message.is_empty() {
                "rate limit reached; try again later".to_owned()
            } else {
                resp.message
            };
            return Err(ChatError::RateLimited {
                message,
                retry_after_seconds: resp.retry_after_seconds,
            });
        }
        Ok(Lease {
            subject,
            reservation_id: resp.reservation_id,
            lease_id: resp.lease_id,
            ttl_seconds: resp.lease_ttl_seconds,
        })
    }

    /// Gives the lease back, settling the reservation at `actual_tokens`. A failure is
    /// logged: the lease expires on its own.
    pub(crate) async fn release(&self, id: &Identity, lease: &Lease, actual_tokens: u32) {
        if lease.is_empty() {
            return;
        }
        let req = id.request(rl::ReleaseRequest {
            subject: Some(rl::Subject {
                key: lease.subject.clone(),
            }),
            reservation_id: lease.reservation_id.clone(),
            lease_id: lease.lease_id.clone(),
            actual_tokens,
        });
        let mut client = self.0.clone();
        if let Err(e) = call("rate-limit", client.release(req)).await {
            tracing::warn!(error = %e, "rate-limit release failed; the lease will expire");
        }
    }

    /// Extends the stream lease in the background.
    pub(crate) fn renew(&self, id: &Identity, lease: &Lease) {
        let req = id.request(rl::RenewLeaseRequest {
            subject: Some(rl::Subject {
                key: lease.subject.clone(),
            }),
            lease_id: lease.lease_id.clone(),
        });
        let mut client = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = call("rate-limit", client.renew_lease(req)).await {
                tracing::debug!(error = %e, "lease renewal failed");
            }
        });
    }
}

/// A lease held for a turn: given back with the tokens used when the turn settles, or
/// with none if the turn is dropped first (the client went away, the task ended early).
pub(crate) struct HeldLease {
    quota: Quota,
    identity: Identity,
    lease: Lease,
    held: bool,
}

impl HeldLease {
    pub(crate) fn new(quota: &Quota, identity: &Identity, lease: Lease) -> Self {
        Self {
            quota: quota.clone(),
            identity: identity.clone(),
            lease,
            held: true,
        }
    }

    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Gives the lease back now, settling the reservation at `actual_tokens`.
    pub(crate) async fn release(mut self, actual_tokens: u32) {
        self.held = false;
        self.quota
            .release(&self.identity, &self.lease, actual_tokens)
            .await;
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if self.held {
            let quota = self.quota.clone();
            let identity = self.identity.clone();
            let lease = std::mem::take(&mut self.lease);
            tokio::spawn(async move { quota.release(&identity, &lease, 0).await });
        }
    }
}
