//! The browser tests' tools: Debian's Chromium driven by `playwright-core` from the repository's one npm root
//! (`node_modules`; `scripts/test.sh` installs both), and a runner for their scripts in `playground/test/`.

use std::path::PathBuf;
use std::process::Command;

use super::report_skip;

/// Chromium's path, or why the browser tests cannot run here.
pub fn chromium() -> Result<PathBuf, String> {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node is not installed".into());
    }
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (Debian's chromium; scripts/test.sh installs it)",
            chromium.display()
        ));
    }
    for package in ["playwright-core", "axe-core"] {
        if !modules.join(package).exists() {
            return Err(format!(
                "node_modules/{package} is missing (scripts/test.sh runs playground/build.sh --check)"
            ));
        }
    }
    Ok(chromium)
}

/// Chromium, or None after saying SKIPPED (outside CI; under CI a missing browser fails the test).
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match chromium() {
        Ok(chromium) => Some(chromium),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the browser tests: {reason}")
        }
        Err(reason) => {
            report_skip(test, &reason);
            None
        }
    }
}

/// Runs `playground/test/<script>` with node and fails the test with its output unless it succeeds.
pub async fn run_script(chromium: &PathBuf, script: &str, args: &[String]) {
    let output = tokio::process::Command::new("node")
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("playground/test")
                .join(script),
        )
        .args(args)
        .env("CHROMIUM", chromium)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // What the script measured, for `--nocapture`.
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

/// Where screenshots are kept: `target/tmp/`.
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}
