fn main() {
    confab_common::binary::main(
        "confab-gateway",
        8080,
        confab_gateway::Config::from_env,
        confab_gateway::run,
    )
}
