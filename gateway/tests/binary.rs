//! The `confab-gateway` binary: starts, reports SERVING, lists its service through
//! reflection, and refuses bad configuration with exit code 64.

use confab_common::testing::{reflection_services, run_to_exit, spawn_service};

const BIN: &str = env!("CARGO_BIN_EXE_confab-gateway");

#[tokio::test]
async fn serves_health_and_reflection() {
    let (_child, addr) = spawn_service(BIN, &[]).await;
    let services = reflection_services(addr).await;
    assert!(
        services
            .iter()
            .any(|s| s == confab_proto::service_names::CHAT),
        "reflection lists {services:?}"
    );
    assert!(services.iter().any(|s| s == "grpc.health.v1.Health"));
}

#[test]
fn bad_listen_address_exits_64_naming_the_variable() {
    let (code, stderr) = run_to_exit(BIN, &[("CONFAB_ADDR", "not-an-address")]);
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stderr.contains("CONFAB_ADDR"), "stderr: {stderr}");
}
