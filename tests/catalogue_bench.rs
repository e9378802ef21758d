//! The catalogue benchmark (`examples/catalogue.rs`) keeps working: it runs at a small size and checks its own
//! answers (list lengths, counts, non-empty pages) as it measures. Its figures mean nothing at this size.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples beside the test binaries.
fn example() -> PathBuf {
    let server = common::process::binary();
    server
        .parent()
        .expect("the server binary lives in a profile directory")
        .join("examples")
        .join("catalogue")
}

#[test]
fn the_catalogue_benchmark_runs_at_a_small_size() {
    let example = example();
    assert!(
        example.exists(),
        "{} is missing: cargo test builds it",
        example.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(&example)
        .args([
            "--components",
            "300",
            "--transformations",
            "500",
            "--samples",
            "5",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the benchmark failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for figure in [
        "cold start with 300 services",
        "`GET /transformation`, 500 items",
        "`runnableOn` over 300 services",
        "`service(id)` with 300 stored",
        "GraphQL creates in batches of 100",
    ] {
        assert!(stdout.contains(figure), "no figure for {figure}:\n{stdout}");
    }
}
