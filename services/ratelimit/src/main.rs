fn main() {
    confab_common::binary::main(
        "confab-ratelimit",
        50054,
        confab_ratelimit::Config::from_env,
        confab_ratelimit::run,
    )
}
