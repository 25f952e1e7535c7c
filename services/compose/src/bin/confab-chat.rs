fn main() {
    confab_common::binary::main(
        "confab-chat",
        50051,
        confab_compose::chat::Config::from_env,
        confab_compose::chat::run,
    )
}
