//! What checking one signature costs: a key bundle and a certificate bundle (leaf + intermediate), made by the
//! real `model_signing` CLI, parsed and verified against a trust policy, and that time next to hashing an upload
//! of 100 KiB and of 1 GiB (sha256, which every upload pays; the rest of an upload costs more, so the share
//! printed is an upper bound).
//!
//! ```sh
//! cargo build --release --example verify_bench && target/release/examples/verify_bench
//! ```

use std::time::{Duration, Instant};

use component_repository::domain::signing::{Bundle, Subject, TrustPolicy};
use component_repository::domain::{Kind, Sha256};
use sha2::Digest as _;
use testkit::signing::{self, Ca, Key, Policy, sign_with_certificate, sign_with_key};

const ROUNDS: u32 = 2_000;

fn main() -> anyhow::Result<()> {
    signing::available().map_err(|reason| anyhow::anyhow!(reason))?;
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let key = Key::p256(dir);
    let key384 = Key::p384(dir);
    let ca = Ca::new(dir);
    let intermediate = ca.intermediate("Bench Intermediate");
    let policy_path = Policy::new()
        .rule(&[], "*")
        .key(&key)
        .key(&key384)
        .certificate(&ca, "bench@example.org")
        .write(dir);
    let text = std::fs::read_to_string(&policy_path)?;
    let policy = TrustPolicy::from_toml(&text, &mut |name| {
        std::fs::read(dir.join(name)).map_err(|e| e.to_string())
    })?;
    let file = dir.join("bench.bin");
    std::fs::write(&file, b"bench")?;
    let sha256 = Sha256::parse(&testkit::sha256_hex(b"bench"))?;

    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let hash_100k = time_sha256(100 * 1024, 200);
    let hash_1g = time_sha256(1024 * 1024 * 1024, 1);
    println!("{profile} build; sha256 of 100 KiB: {hash_100k:?}, of 1 GiB: {hash_1g:?}");
    for (label, bundle) in [
        ("key P-256", sign_with_key(&file, &key)),
        ("key P-384", sign_with_key(&file, &key384)),
        (
            "certificate (leaf + intermediate + root)",
            sign_with_certificate(&file, &intermediate.leaf("bench@example.org")),
        ),
    ] {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            let parsed = Bundle::parse(&bundle)?;
            let verdict = policy.verify(
                Subject {
                    kind: Kind::Model,
                    name: "bench",
                    sha256: &sha256,
                },
                &parsed,
            );
            assert!(verdict.verified, "{verdict:?}");
        }
        let each = start.elapsed() / ROUNDS;
        println!(
            "{label}: {each:?} per signature (parse + verify); {:.1}% of hashing 100 KiB, {:.4}% of hashing 1 GiB",
            share(each, hash_100k),
            share(each, hash_1g)
        );
    }
    Ok(())
}

/// Time to sha256 `size` bytes, the best of `runs`.
fn time_sha256(size: usize, runs: u32) -> Duration {
    let chunk = vec![0x5au8; size.min(1024 * 1024)];
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut hasher = sha2::Sha256::new();
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                hasher.update(&chunk[..n]);
                left -= n;
            }
            std::hint::black_box(hasher.finalize());
            start.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn share(part: Duration, whole: Duration) -> f64 {
    100.0 * part.as_secs_f64() / whole.as_secs_f64()
}
