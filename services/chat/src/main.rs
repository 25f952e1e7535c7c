fn main() {
    confab_common::binary::main(
        "confab-chat",
        50051,
        confab_chat::Config::from_env,
        confab_chat::run,
    )
}
