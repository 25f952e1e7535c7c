//! In-memory stand-ins for the conversation, files and rate-limit services, with the
//! same gRPC contracts (used until and besides the real crates, and to assert on what
//! chat stored and released).

use std::collections::HashMap;
use std::sync::Arc;

use confab_common::Identity;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_server::{
    ConversationService, ConversationServiceServer,
};
use confab_proto::files::v1 as files;
use confab_proto::files::v1::file_service_server::{FileService, FileServiceServer};
use confab_proto::ratelimit::v1 as rl;
use confab_proto::ratelimit::v1::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn owner<T>(r: &Request<T>) -> Result<String, Status> {
    Ok(Identity::from_request(r)?.user_id)
}

#[derive(Default)]
pub struct ConvState {
    pub conversations: HashMap<String, (String, conv::Conversation)>,
    /// In insertion order.
    pub messages: Vec<conv::Message>,
    pub updates: usize,
}

#[derive(Clone, Default)]
pub struct FakeConversation(pub Arc<Mutex<ConvState>>);

impl FakeConversation {
    pub fn messages(&self, conversation_id: &str) -> Vec<conv::Message> {
        self.0
            .lock()
            .messages
            .iter()
            .filter(|m| m.conversation_id == conversation_id)
            .cloned()
            .collect()
    }

    pub fn conversation(&self, id: &str) -> conv::Conversation {
        self.0.lock().conversations[id].1.clone()
    }

    pub fn server(&self) -> ConversationServiceServer<Self> {
        ConversationServiceServer::new(self.clone())
    }

    fn check(&self, user: &str, id: &str) -> Result<(), Status> {
        match self.0.lock().conversations.get(id) {
            Some((o, _)) if o == user => Ok(()),
            _ => Err(Status::not_found("no such conversation")),
        }
    }
}

#[tonic::async_trait]
impl ConversationService for FakeConversation {
    async fn create_conversation(
        &self,
        r: Request<conv::CreateConversationRequest>,
    ) -> Result<Response<conv::Conversation>, Status> {
        let user = owner(&r)?;
        let r = r.into_inner();
        let c = conv::Conversation {
            id: uuid::Uuid::new_v4().to_string(),
            title: r.title,
            model: r.model,
            system_prompt: r.system_prompt,
            created_at_ms: now_ms(),
            ..Default::default()
        };
        self.0
            .lock()
            .conversations
            .insert(c.id.clone(), (user, c.clone()));
        Ok(Response::new(c))
    }

    async fn get_conversation(
        &self,
        r: Request<conv::GetConversationRequest>,
    ) -> Result<Response<conv::Conversation>, Status> {
        let user = owner(&r)?;
        let id = r.into_inner().conversation_id;
        self.check(&user, &id)?;
        Ok(Response::new(self.conversation(&id)))
    }

    async fn update_conversation(
        &self,
        r: Request<conv::UpdateConversationRequest>,
    ) -> Result<Response<conv::Conversation>, Status> {
        let user = owner(&r)?;
        let r = r.into_inner();
        self.check(&user, &r.conversation_id)?;
        let mut s = self.0.lock();
        let c = &mut s.conversations.get_mut(&r.conversation_id).unwrap().1;
        if let Some(t) = r.title {
            c.title = t;
            c.title_set = true;
        }
        Ok(Response::new(c.clone()))
    }

    async fn list_messages(
        &self,
        r: Request<conv::ListMessagesRequest>,
    ) -> Result<Response<conv::ListMessagesResponse>, Status> {
        let user = owner(&r)?;
        let r = r.into_inner();
        self.check(&user, &r.conversation_id)?;
        let mut messages: Vec<_> = self
            .messages(&r.conversation_id)
            .into_iter()
            .filter(|m| r.include_superseded || !m.superseded)
            .collect();
        if r.newest_first {
            messages.reverse();
        }
        Ok(Response::new(conv::ListMessagesResponse {
            messages,
            next_page_token: String::new(),
        }))
    }

    async fn get_message(
        &self,
        r: Request<conv::GetMessageRequest>,
    ) -> Result<Response<conv::Message>, Status> {
        let user = owner(&r)?;
        let r = r.into_inner();
        self.check(&user, &r.conversation_id)?;
        self.messages(&r.conversation_id)
            .into_iter()
            .find(|m| m.id == r.message_id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such message"))
    }

    async fn append_message(
        &self,
        r: Request<conv::AppendMessageRequest>,
    ) -> Result<Response<conv::Message>, Status> {
        let user = owner(&r)?;
        let r = r.into_inner();
        self.check(&user, &r.conversation_id)?;
        let m = conv::Message {
            id: uuid::Uuid::now_v7().to_string(),
            conversation_id: r.conversation_id,
            role: r.role,
            content: r.content,
            status: r.status,
            attachments: r.attachments,
            model: r.model,
            parent_id: r.parent_id,
            generation_id: r.generation_id,
            created_at_ms: now_ms(),
            ..Default::default()
        };
        self.0.lock().messages.push(m.clone());
        Ok(Response::new(m))
    }

    async fn update_message(
        &self,
        r: Request<conv::UpdateMessageRequest>,
    ) -> Result<Response<conv::Message>, Status> {
        let user = owner(&r)?;
        let r = r.into_inner();
        self.check(&user, &r.conversation_id)?;
        let mut s = self.0.lock();
        s.updates += 1;
        let m = s
            .messages
            .iter_mut()
            .find(|m| m.id == r.message_id)
            .ok_or_else(|| Status::not_found("no such message"))?;
        if let Some(c) = r.content {
            m.content = c;
        }
        if let Some(st) = r.status {
            m.status = st;
        }
        if r.usage.is_some() {
            m.usage = r.usage;
        }
        if r.context.is_some() {
            m.context = r.context;
        }
        if let Some(e) = r.error_message {
            m.error_message = e;
        }
        Ok(Response::new(m.clone()))
    }

    async fn supersede_messages(
        &self,
        r: Request<conv::SupersedeMessagesRequest>,
    ) -> Result<Response<conv::SupersedeMessagesResponse>, Status> {
        let user = owner(&r)?;
        let r = r.into_inner();
        self.check(&user, &r.conversation_id)?;
        let mut s = self.0.lock();
        let mut hit = false;
        let mut ids = Vec::new();
        for m in s
            .messages
            .iter_mut()
            .filter(|m| m.conversation_id == r.conversation_id && !m.superseded)
        {
            if m.id == r.from_message_id {
                hit = true;
                if !r.inclusive {
                    continue;
                }
            }
            if hit {
                m.superseded = true;
                ids.push(m.id.clone());
            }
        }
        if !hit {
            return Err(Status::not_found("no such message"));
        }
        Ok(Response::new(conv::SupersedeMessagesResponse {
            superseded_message_ids: ids,
        }))
    }
}

#[derive(Clone, Default)]
pub struct FakeFiles(pub Arc<Mutex<HashMap<String, files::FilePromptParts>>>);

impl FakeFiles {
    pub fn server(&self) -> FileServiceServer<Self> {
        FileServiceServer::new(self.clone())
    }

    pub fn add_text(&self, id: &str, name: &str, parts: &[(&str, &str)]) {
        self.0.lock().insert(
            id.into(),
            files::FilePromptParts {
                file: Some(files::FileInfo {
                    id: id.into(),
                    filename: name.into(),
                    mime_type: "application/pdf".into(),
                    kind: files::FileKind::Pdf as i32,
                    ..Default::default()
                }),
                text_parts: parts
                    .iter()
                    .map(|(l, t)| files::TextPromptPart {
                        label: (*l).into(),
                        text: (*t).into(),
                        token_count: 0,
                    })
                    .collect(),
                image: None,
            },
        );
    }

    pub fn add_image(&self, id: &str, name: &str, data_url: &str) {
        self.0.lock().insert(
            id.into(),
            files::FilePromptParts {
                file: Some(files::FileInfo {
                    id: id.into(),
                    filename: name.into(),
                    mime_type: "image/png".into(),
                    kind: files::FileKind::Image as i32,
                    ..Default::default()
                }),
                text_parts: vec![],
                image: Some(files::ImagePromptPart {
                    data_url: data_url.into(),
                    width: 1,
                    height: 1,
                }),
            },
        );
    }
}

#[tonic::async_trait]
impl FileService for FakeFiles {
    async fn get_prompt_parts(
        &self,
        r: Request<files::GetPromptPartsRequest>,
    ) -> Result<Response<files::GetPromptPartsResponse>, Status> {
        owner(&r)?;
        let r = r.into_inner();
        let store = self.0.lock();
        let mut out = Vec::new();
        for id in r.file_ids {
            let mut f = store
                .get(&id)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("no file {id}")))?;
            if !r.include_images {
                f.image = None;
            }
            out.push(f);
        }
        Ok(Response::new(files::GetPromptPartsResponse { files: out }))
    }
}

#[derive(Default)]
pub struct LimitState {
    pub deny: bool,
    pub acquired: u32,
    pub released: Vec<u32>,
    pub in_flight: i64,
}

#[derive(Clone, Default)]
pub struct FakeLimits(pub Arc<Mutex<LimitState>>);

impl FakeLimits {
    pub fn server(&self) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(self.clone())
    }
}

#[tonic::async_trait]
impl RateLimitService for FakeLimits {
    async fn acquire(
        &self,
        r: Request<rl::AcquireRequest>,
    ) -> Result<Response<rl::AcquireResponse>, Status> {
        let r = r.into_inner();
        assert!(r.subject.unwrap().key.starts_with("user:"));
        let mut s = self.0.lock();
        if s.deny {
            return Ok(Response::new(rl::AcquireResponse {
                allowed: false,
                denied_by: rl::LimitKind::RequestsPerMinute as i32,
                retry_after_seconds: 42,
                message: "20 requests per minute; try again in 42 s".into(),
                ..Default::default()
            }));
        }
        s.acquired += 1;
        s.in_flight += 1;
        Ok(Response::new(rl::AcquireResponse {
            allowed: true,
            reservation_id: format!("res-{}", s.acquired),
            lease_id: format!("lease-{}", s.acquired),
            lease_ttl_seconds: 60,
            ..Default::default()
        }))
    }

    async fn release(
        &self,
        r: Request<rl::ReleaseRequest>,
    ) -> Result<Response<rl::ReleaseResponse>, Status> {
        let r = r.into_inner();
        let mut s = self.0.lock();
        s.in_flight -= 1;
        s.released.push(r.actual_tokens);
        Ok(Response::new(rl::ReleaseResponse { quota: None }))
    }

    async fn renew_lease(
        &self,
        _r: Request<rl::RenewLeaseRequest>,
    ) -> Result<Response<rl::RenewLeaseResponse>, Status> {
        Ok(Response::new(rl::RenewLeaseResponse {
            renewed: true,
            lease_ttl_seconds: 60,
        }))
    }

    async fn get_quota(
        &self,
        r: Request<rl::GetQuotaRequest>,
    ) -> Result<Response<rl::Quota>, Status> {
        let key = r.into_inner().subject.unwrap_or_default().key;
        Ok(Response::new(rl::Quota {
            requests_per_minute_limit: 20,
            requests_remaining: if key.starts_with("user:") { 19 } else { 0 },
            ..Default::default()
        }))
    }
}
