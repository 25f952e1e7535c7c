//! Through a real gRPC server on port 0: identity from metadata, status codes, and
//! DeleteConversation releasing attachments through a (fake) file service.

use std::sync::Arc;

use confab_common::Identity;
use confab_common::identity::USER_KEY;
use confab_common::testing::{connect, local_listener, unique_name};
use confab_conversation::{Config, server_with_files};
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::conversation::v1::*;
use confab_proto::files::v1::file_service_server::{FileService, FileServiceServer};
use confab_proto::files::v1::{ReleaseFilesRequest, ReleaseFilesResponse};
use parking_lot::Mutex;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// (caller's user id, file ids) of one ReleaseFiles call.
type Release = (String, Vec<String>);

/// Records ReleaseFiles calls with the caller's user id.
#[derive(Default, Clone)]
struct FakeFiles {
    calls: Arc<Mutex<Vec<Release>>>,
}

#[tonic::async_trait]
impl FileService for FakeFiles {
    async fn release_files(
        &self,
        req: Request<ReleaseFilesRequest>,
    ) -> Result<Response<ReleaseFilesResponse>, Status> {
        let user = Identity::from_request(&req)?.user_id;
        let ids = req.into_inner().file_ids;
        let n = ids.len() as u32;
        self.calls.lock().push((user, ids));
        Ok(Response::new(ReleaseFilesResponse { reclaimed: n }))
    }
}

struct App {
    client: ConversationServiceClient<Channel>,
    files: FakeFiles,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let files = FakeFiles::default();
    let channel = confab_common::channel::in_process(FileServiceServer::new(files.clone()));
    let svc = server_with_files(Config::sqlite(dir.path()), Some(channel))
        .await
        .unwrap();
    let (listener, addr) = local_listener().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    App {
        client: ConversationServiceClient::new(connect(addr).await),
        files,
        _dir: dir,
    }
}

fn as_user<T>(user: &str, msg: T) -> Request<T> {
    Identity::user(user).request(msg)
}

#[tokio::test]
async fn requests_without_identity_are_unauthenticated() {
    let mut app = spawn_app().await;
    let s = app
        .client
        .list_conversations(ListConversationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = app
        .client
        .create_conversation(CreateConversationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = app
        .client
        .search_conversations(SearchConversationsRequest {
            query: "x".into(),
            page_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let mut req = Request::new(GetConversationRequest {
        conversation_id: String::new(),
    });
    req.metadata_mut()
        .insert(USER_KEY, "has spaces".parse().unwrap());
    assert_eq!(
        app.client.get_conversation(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn round_trip_isolation_and_codes_over_grpc() {
    let mut app = spawn_app().await;
    let (a, b) = (unique_name("alice"), unique_name("bob"));
    let c = app
        .client
        .create_conversation(as_user(
            &a,
            CreateConversationRequest {
                title: "Over the wire".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let m = app
        .client
        .append_message(as_user(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::User as i32,
                content: "hello grpc world".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let hits = app
        .client
        .search_conversations(as_user(
            &a,
            SearchConversationsRequest {
                query: "grpc".into(),
                page_size: 5,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].message_id, m.id);
    assert_eq!(hits[0].snippet, "hello «grpc» world");
    assert_eq!(
        &hits[0].snippet[hits[0].highlights[0].start as usize..hits[0].highlights[0].end as usize],
        "grpc"
    );

    let s = app
        .client
        .get_conversation(as_user(
            &b,
            GetConversationRequest {
                conversation_id: c.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(s.message(), "conversation not found");
    let s = app
        .client
        .get_conversation(as_user(
            &a,
            GetConversationRequest {
                conversation_id: "not-an-id".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = app
        .client
        .append_message(as_user(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: 1,
                content: "x".repeat(300 * 1024),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("the limit is 256 KiB"),
        "{}",
        s.message()
    );

    let exported = app
        .client
        .export_conversation(as_user(
            &a,
            ExportConversationRequest {
                conversation_id: c.id.clone(),
                format: ExportFormat::Markdown as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        String::from_utf8(exported.content)
            .unwrap()
            .contains("hello grpc world")
    );
}

#[tokio::test]
async fn delete_releases_attachments_to_the_file_service_as_the_owner() {
    let mut app = spawn_app().await;
    let a = unique_name("alice");
    let c = app
        .client
        .create_conversation(as_user(&a, CreateConversationRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let att = Attachment {
        file_id: "file-1".into(),
        filename: "a.png".into(),
        mime_type: "image/png".into(),
        size_bytes: 3,
        is_image: true,
    };
    app.client
        .append_message(as_user(
            &a,
            AppendMessageRequest {
                conversation_id: c.id.clone(),
                role: Role::User as i32,
                attachments: vec![att],
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // Another user cannot delete it, and nothing is released.
    let s = app
        .client
        .delete_conversation(as_user(
            &unique_name("bob"),
            DeleteConversationRequest {
                conversation_id: c.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    assert!(app.files.calls.lock().is_empty());

    let r = app
        .client
        .delete_conversation(as_user(
            &a,
            DeleteConversationRequest {
                conversation_id: c.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.released_file_ids, ["file-1"]);
    assert_eq!(
        *app.files.calls.lock(),
        [(a.clone(), vec!["file-1".to_owned()])]
    );
}

#[tokio::test]
async fn every_rpc_without_identity_is_unauthenticated() {
    let app = spawn_app().await;
    let id = confab_conversation::model::new_id();
    let c = || app.client.clone();
    let codes = [
        c().create_conversation(CreateConversationRequest::default())
            .await
            .map(drop),
        c().list_conversations(ListConversationsRequest::default())
            .await
            .map(drop),
        c().get_conversation(GetConversationRequest {
            conversation_id: id.clone(),
        })
        .await
        .map(drop),
        c().update_conversation(UpdateConversationRequest {
            conversation_id: id.clone(),
            ..Default::default()
        })
        .await
        .map(drop),
        c().delete_conversation(DeleteConversationRequest {
            conversation_id: id.clone(),
        })
        .await
        .map(drop),
        c().list_messages(ListMessagesRequest {
            conversation_id: id.clone(),
            ..Default::default()
        })
        .await
        .map(drop),
        c().get_message(GetMessageRequest {
            conversation_id: id.clone(),
            message_id: id.clone(),
        })
        .await
        .map(drop),
        c().search_conversations(SearchConversationsRequest {
            query: "x".into(),
            page_size: 0,
        })
        .await
        .map(drop),
        c().export_conversation(ExportConversationRequest {
            conversation_id: id.clone(),
            format: 1,
        })
        .await
        .map(drop),
        c().append_message(AppendMessageRequest {
            conversation_id: id.clone(),
            role: 1,
            ..Default::default()
        })
        .await
        .map(drop),
        c().update_message(UpdateMessageRequest {
            conversation_id: id.clone(),
            message_id: id.clone(),
            ..Default::default()
        })
        .await
        .map(drop),
        c().supersede_messages(SupersedeMessagesRequest {
            conversation_id: id.clone(),
            from_message_id: id.clone(),
            inclusive: true,
        })
        .await
        .map(drop),
    ];
    for (i, r) in codes.into_iter().enumerate() {
        assert_eq!(r.unwrap_err().code(), Code::Unauthenticated, "rpc #{i}");
    }
}
