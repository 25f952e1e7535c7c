fn main() {
    confab_common::binary::main(
        "confab-files",
        50053,
        confab_files::Config::from_env,
        confab_files::run,
    )
}
