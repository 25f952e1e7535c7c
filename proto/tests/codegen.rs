//! Regenerates the Rust code from `proto/` and fails if it differs from the checked-in
//! `src/gen/`. `UPDATE_PROTO=1` rewrites `src/gen/` instead.

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &[
    "confab/chat/v1/chat.proto",
    "confab/conversation/v1/conversation.proto",
    "confab/files/v1/files.proto",
    "confab/ratelimit/v1/ratelimit.proto",
];

fn generate(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(PROTOS, [root.join("proto")]).expect("protos compile");
    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .unwrap();
    tonic_prost_build::configure()
        .build_transport(false)
        // Later work fills RPCs in one at a time; the rest answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .server_mod_attribute(".", "#[cfg(feature = \"server\")]")
        .out_dir(out)
        .compile_fds(fds)
        .expect("code generation");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn generated_code_matches_protos() {
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());

    if std::env::var_os("UPDATE_PROTO").is_some() {
        for f in files(&checked_in) {
            std::fs::remove_file(f).unwrap();
        }
        for f in files(tmp.path()) {
            std::fs::copy(&f, checked_in.join(f.file_name().unwrap())).unwrap();
        }
        return;
    }

    let names = |d: &Path| -> Vec<_> {
        files(d)
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&checked_in),
        names(tmp.path()),
        "generated file set changed; run UPDATE_PROTO=1 cargo test -p confab-proto --test codegen"
    );
    for f in files(tmp.path()) {
        let fresh = std::fs::read(&f).unwrap();
        let old = std::fs::read(checked_in.join(f.file_name().unwrap())).unwrap();
        assert!(
            fresh == old,
            "{} is stale; run UPDATE_PROTO=1 cargo test -p confab-proto --test codegen",
            f.display()
        );
    }
}
