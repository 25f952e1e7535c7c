//! Graceful shutdown of a service binary: SIGTERM during an open server stream lets
//! the stream finish within the grace period, then the process exits 0; a stream that
//! outlives the grace period is cut and the process still exits 0.

use std::time::{Duration, Instant};

use confab_common::server::probe_health;
use confab_common::testing::spawn_service;
use tokio_stream::wrappers::ReceiverStream;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};

const BIN: &str = env!("CARGO_BIN_EXE_confab-conversation");

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

/// An open bidirectional stream (reflection) we can keep alive and talk on.
async fn open_stream(
    addr: std::net::SocketAddr,
) -> (
    tokio::sync::mpsc::Sender<ServerReflectionRequest>,
    tonic::Streaming<ServerReflectionResponse>,
) {
    let mut client = ServerReflectionClient::new(confab_common::testing::connect(addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(list_services()).await.unwrap();
    let mut stream = client
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    (tx, stream)
}

#[tokio::test]
async fn sigterm_lets_an_open_stream_finish_then_exits_0() {
    let (mut child, addr) =
        spawn_service(BIN, &[("CONFAB_SHUTDOWN_GRACE_SECS", "15".into())]).await;
    let (tx, mut stream) = open_stream(addr).await;

    child.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Draining: the open stream is still served...
    tx.send(list_services()).await.unwrap();
    assert!(stream.message().await.unwrap().is_some());
    // ...new connections are not, and the process waits for the stream.
    assert!(!probe_health(addr, "").await);
    assert_eq!(child.wait_exit(Duration::from_millis(200)).await, None);

    // The client finishes its stream; the server closes it and exits cleanly.
    drop(tx);
    while let Ok(Some(_)) = stream.message().await {}
    assert_eq!(
        child.wait_exit(Duration::from_secs(10)).await,
        Some(0),
        "log: {}",
        child.log()
    );
}

#[tokio::test]
async fn a_stream_outliving_the_grace_period_is_cut_and_exit_is_0() {
    let (mut child, addr) = spawn_service(BIN, &[("CONFAB_SHUTDOWN_GRACE_SECS", "1".into())]).await;
    let (_tx, _stream) = open_stream(addr).await;
    let start = Instant::now();
    child.signal("TERM");
    let code = child.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "log: {}", child.log());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the grace period"
    );
}
