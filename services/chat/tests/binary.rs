//! The `confab-chat` binary: starts, reports SERVING, lists its service through
//! reflection, and refuses bad configuration with exit code 64.

use confab_common::testing::{assert_binary_serves, assert_config_error_exits_64};

const BIN: &str = env!("CARGO_BIN_EXE_confab-chat");

#[tokio::test]
async fn serves_health_and_reflection() {
    assert_binary_serves(BIN, confab_proto::service_names::CHAT).await;
}

#[test]
fn bad_listen_address_exits_64_naming_the_variable() {
    assert_config_error_exits_64(BIN, "CONFAB_ADDR", "not-an-address");
}
