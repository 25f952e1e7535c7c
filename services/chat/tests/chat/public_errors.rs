//! What a user reads about a failed answer passes the error table's public-message rule:
//! no panic text, no transport library errors, no server paths — in the `Failed` event
//! and in the stored message alike.

use std::sync::Arc;

use confab_chat::provider::openai::model_spec;
use confab_chat::provider::{ModelProvider, ModelRequest, ModelSpec, ModelStream, ProviderError};
use confab_chat::service::Providers;
use confab_chat::{ChatDeps, ChatServiceImpl, Config};
use confab_common::Identity;
use confab_common::channel::in_process;
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;

use crate::fakes::{FakeConversation, FakeFiles, FakeLimits};
use crate::{Harness, collect, failed, serve_chat};

/// A model whose call panics with a message no user may see.
struct Panics;

#[async_trait::async_trait]
impl ModelProvider for Panics {
    fn name(&self) -> &'static str {
        "openai-compatible"
    }
    fn models(&self) -> Vec<ModelSpec> {
        vec![model_spec("openai-compatible", "panicky")]
    }
    fn default_model(&self) -> String {
        "panicky".into()
    }
    fn title_model(&self) -> Option<String> {
        None
    }
    fn count_tokens(&self, _model: &str, text: &str) -> u32 {
        text.len() as u32 / 4 + 1
    }
    async fn stream(&self, _request: ModelRequest) -> Result<ModelStream, ProviderError> {
        panic!("secret-panic-text at src/provider/oops.rs:42");
    }
}

#[tokio::test]
async fn a_panicking_model_fails_the_answer_with_the_internal_message() {
    let (conv, files, limits) = (
        FakeConversation::default(),
        FakeFiles::default(),
        FakeLimits::default(),
    );
    let deps = ChatDeps {
        conversation: in_process(conv.server()),
        files: in_process(files.server()),
        ratelimit: in_process(limits.server()),
    };
    let providers = Providers::new(vec![Arc::new(Panics)]);
    let svc = ChatServiceImpl::with_providers(Config::default(), providers, deps).unwrap();
    let mut client =
        ChatServiceClient::new(confab_common::testing::connect(serve_chat(svc).await).await);
    let user = Identity::user("panicky-user");
    let evs = collect(
        client
            .send_message(user.request(chat::SendMessageRequest {
                content: "hello".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let f = failed(&evs);
    assert_eq!(f.code, chat::FailureCode::Internal as i32);
    assert_eq!(
        f.message,
        "internal error; the details are in the server log"
    );
    let stored = conv
        .messages(&evs[0].conversation_id)
        .into_iter()
        .find(|m| m.id == f.assistant_message_id)
        .unwrap();
    assert_eq!(stored.error_message, f.message);
    assert_eq!(limits.0.lock().in_flight, 0, "the lease went back");
}

#[tokio::test]
async fn transport_failures_read_as_their_kind_not_their_library_error() {
    let h = Harness::start().await;
    for (scenario, code, message) in [
        (
            "500",
            chat::FailureCode::UpstreamUnavailable,
            "the model provider is unavailable; try again shortly",
        ),
        (
            "hang",
            chat::FailureCode::UpstreamTimeout,
            "the model provider did not answer in time; try again",
        ),
    ] {
        let evs = collect(h.send(&format!("[scenario:{scenario}]")).await).await;
        let f = failed(&evs);
        assert_eq!(f.code, code as i32, "{scenario}: {f:?}");
        assert_eq!(f.message, message, "{scenario}");
        let stored = h
            .conv
            .messages(&evs[0].conversation_id)
            .into_iter()
            .find(|m| m.id == f.assistant_message_id)
            .unwrap();
        assert_eq!(stored.error_message, message, "{scenario}");
    }
}
