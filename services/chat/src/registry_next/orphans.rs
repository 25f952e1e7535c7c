//! What happens to an answer whose replica died: its stored message reads as interrupted,
//! with the partial text the stream carried.

use confab_common::{GrpcChannel, Identity};
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;

use super::{GenerationInfo, INTERRUPTED};

/// A generation whose owner stopped renewing its lease, claimed by this replica.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub info: GenerationInfo,
    /// The answer's text from its events when they were all still in the stream;
    /// `None` keeps what the owner last saved.
    pub text: Option<String>,
}

#[async_trait::async_trait]
pub trait OrphanHandler: Send + Sync + 'static {
    /// Stores the answer as interrupted.
    async fn interrupted(&self, orphan: &Orphan) -> Result<(), String>;
}

/// Marks the stored answer failed ("interrupted") through the conversation service.
pub struct ConversationOrphans {
    client: ConversationServiceClient<GrpcChannel>,
}

impl ConversationOrphans {
    pub fn new(channel: GrpcChannel) -> Self {
        Self {
            client: ConversationServiceClient::new(channel),
        }
    }
}

#[async_trait::async_trait]
impl OrphanHandler for ConversationOrphans {
    async fn interrupted(&self, orphan: &Orphan) -> Result<(), String> {
        let info = &orphan.info;
        let id = if info.anonymous {
            Identity::anonymous(info.owner.clone(), None)
        } else {
            Identity::user(info.owner.clone())
        };
        let mut client = self.client.clone();
        let stored = client
            .get_message(id.request(conv::GetMessageRequest {
                conversation_id: info.conversation_id.clone(),
                message_id: info.assistant_message_id.clone(),
            }))
            .await
            .map_err(|s| format!("reading the answer: {}", s.message()))?
            .into_inner();
        // The owner may have stored it after all (it lost Redis, not its life): keep that.
        if stored.status != conv::MessageStatus::Streaming as i32 {
            return Ok(());
        }
        client
            .update_message(
                id.request(conv::UpdateMessageRequest {
                    conversation_id: info.conversation_id.clone(),
                    message_id: info.assistant_message_id.clone(),
                    content: orphan
                        .text
                        .clone()
                        .filter(|t| t.len() >= stored.content.len()),
                    status: Some(conv::MessageStatus::Failed as i32),
                    error_message: Some(INTERRUPTED.to_owned()),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|s| format!("storing the answer as interrupted: {}", s.message()))?;
        Ok(())
    }
}
