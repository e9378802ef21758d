//! Runs the README's tour: every ```bash block, in order, against a freshly started binary.

mod common;

use common::process::ServerProcess;

fn tour_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```bash") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn readme_tour_runs_as_written() {
    for tool in ["curl", "jq", "cmp", "openssl"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "the README tour needs `{tool}` on the PATH (.ci/run installs it)"
        );
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = tour_blocks(&readme);
    assert!(
        blocks.len() >= 6,
        "the tour has its examples: {}",
        blocks.len()
    );

    // `model_signing` (Signing and verification) as scripts/test.sh installs it, found like the user's own.
    let mut path = std::env::var("PATH").unwrap_or_default();
    let signing = std::env::var("MODEL_SIGNING_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/tools/model-signing/bin/model_signing")
        });
    if let Some(bin) = signing.parent().filter(|_| signing.exists()) {
        path = format!("{}:{path}", bin.display());
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let address = server.base.trim_start_matches("http://").to_owned();
    for (i, block) in blocks.iter().enumerate() {
        let script = block.replace("localhost:8000", &address);
        let output = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", &path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "README example {} failed:\n{block}\n--- stdout\n{}\n--- stderr\n{}",
            i + 1,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
