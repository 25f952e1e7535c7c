fn main() {
    confab_common::binary::main(
        "confab-conversation",
        50052,
        confab_conversation::Config::from_env,
        confab_conversation::run,
    )
}
