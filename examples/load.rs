//! A load test on loopback: many concurrent clients mixing uploads, downloads and filtered listings against a real
//! server, for a bounded time; it stops by itself.
//!
//! ```sh
//! cargo build --release --bins --examples && target/release/examples/load [seconds=60] [clients=100] [-- server flags]
//! ```
//!
//! Prints requests/s, p50/p99 latency (all requests and per kind), errors, bytes whose sha256 was verified, and the
//! server's peak RSS. It fails (exit 1) on any error or hash mismatch: zero of each is the bar.

#[path = "support/client.rs"]
mod client;
#[path = "../tests/common/process.rs"]
mod process;
#[path = "support/random.rs"]
mod random;
#[path = "support/rss.rs"]
mod rss;
#[path = "support/stats.rs"]
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use client::{sha256_hex, upload};
use futures_util::StreamExt;
use random::Rng;
use rss::{RssSampler, rss_bytes};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stats::ms_at;

/// Files that every client downloads and verifies; they never change during the run.
const SHARED_FILES: usize = 20;
const MIB: f64 = 1024.0 * 1024.0;

/// One request of the mix; an upload carries its payload and that payload's sha256.
enum Work {
    Upload(Vec<u8>, String),
    Download,
    List,
}

impl Work {
    fn action(&self) -> Action {
        match self {
            Work::Upload(..) => Action::Upload,
            Work::Download => Action::Download,
            Work::List => Action::List,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Action {
    Upload,
    Download,
    List,
}

#[derive(Default)]
struct Tally {
    latencies: HashMap<Action, Vec<Duration>>,
    errors: Vec<String>,
    mismatches: u64,
    verified_bytes: u64,
}

/// Downloads and hashes a file; returns its size and whether the hash matched.
async fn download(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    expected: &str,
) -> anyhow::Result<(u64, bool)> {
    let response = client
        .get(format!("{base}/service/{id}"))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut size = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size, hex::encode(hasher.finalize()) == expected))
}

async fn list(client: &reqwest::Client, base: &str, rng: &mut Rng) -> anyhow::Result<()> {
    let ram = rng.below(16);
    let query = format!(
        "{{ services(filter: {{needs: {{maxRam: {ram}, libraries: [{{name: \"torch\", version: \"2.{}\"}}]}}}}, first: 20) \
         {{ totalCount edges {{ node {{ id file {{ size }} }} }} }} }}",
        rng.below(5)
    );
    let response: Value = client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if response.get("errors").is_some() || !response["data"]["services"]["totalCount"].is_number() {
        bail!("list: {response}");
    }
    Ok(())
}

async fn client_loop(
    n: usize,
    client: reqwest::Client,
    base: String,
    shared: Arc<Vec<(String, String)>>,
    deadline: Instant,
) -> Tally {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut tally = Tally::default();
    let own = format!("load.client-{n:03}");
    let mut own_sha: Option<String> = None;
    while Instant::now() < deadline {
        // An upload's payload is made before the clock starts: the figures are the server's, not the client's hashing.
        let work = match rng.below(100) {
            0..20 => {
                let len = 1024 + rng.below(256 * 1024) as usize;
                let data = rng.bytes(len);
                let sha = sha256_hex(&data);
                Work::Upload(data, sha)
            }
            20..70 => Work::Download,
            _ => Work::List,
        };
        let action = work.action();
        let started = Instant::now();
        let outcome: anyhow::Result<()> = match work {
            Work::Upload(data, sha) => {
                let result = upload(&client, &base, &own, data, &sha).await;
                if result.is_ok() {
                    own_sha = Some(sha);
                }
                result
            }
            Work::Download => {
                // Mostly the shared files; sometimes the client's own, which it alone replaces.
                let (id, expected) = match (&own_sha, rng.below(4)) {
                    (Some(sha), 0) => (own.clone(), sha.clone()),
                    _ => shared[rng.below(shared.len() as u64) as usize].clone(),
                };
                match download(&client, &base, &id, &expected).await {
                    Ok((size, true)) => {
                        tally.verified_bytes += size;
                        Ok(())
                    }
                    Ok((_, false)) => {
                        tally.mismatches += 1;
                        Err(anyhow::anyhow!("sha256 mismatch on {id}"))
                    }
                    Err(e) => Err(e),
                }
            }
            Work::List => list(&client, &base, &mut rng).await,
        };
        tally
            .latencies
            .entry(action)
            .or_default()
            .push(started.elapsed());
        if let Err(e) = outcome {
            tally.errors.push(format!("{action:?}: {e:#}"));
        }
    }
    tally
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(60), |a| a.parse())?;
    let clients: usize = args
        .next()
        .filter(|a| a != "--")
        .map_or(Ok(100), |a| a.parse())?;
    let server_args: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();

    let dir = tempfile::tempdir_in(".")?;
    let flags: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = process::ServerProcess::start(&dir.path().join("data"), &flags);
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;

    // The catalogue: services with needs to filter on, the shared files, and one component per client.
    let mut rng = Rng(42);
    let mut shared = Vec::new();
    for i in 0..200 {
        let id = format!("load.svc-{i:03}");
        let mutation = format!(
            "mutation {{ createService(input: {{id: \"{id}\", needs: {{ram: {}, gpu: {}, \
             preinstalledLibraries: [{{name: \"torch\", version: \">=2.{}\"}}]}}}}) {{ id }} }}",
            i % 16,
            i % 3 == 0,
            i % 5
        );
        let created: Value = client
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": mutation }))
            .send()
            .await?
            .json()
            .await?;
        if created.get("errors").is_some() {
            bail!("setting up: {created}");
        }
        if i < SHARED_FILES {
            let len = 64 * 1024 + rng.below(1024 * 1024) as usize;
            let data = rng.bytes(len);
            let sha = sha256_hex(&data);
            upload(&client, &base, &id, data, &sha).await?;
            shared.push((id.clone(), sha));
        }
    }
    for n in 0..clients {
        let mutation =
            format!("mutation {{ createService(input: {{id: \"load.client-{n:03}\"}}) {{ id }} }}");
        client
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": mutation }))
            .send()
            .await?
            .error_for_status()?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_bytes(server.child.id()).unwrap_or(0);
    let rss = RssSampler::start(server.child.id());
    rss.reset();

    println!("load: {clients} clients for {seconds} s against {base} (loopback)");
    let shared = Arc::new(shared);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            tokio::spawn(client_loop(
                n,
                client.clone(),
                base.clone(),
                shared.clone(),
                deadline,
            ))
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        for (action, latencies) in tally.latencies {
            total.latencies.entry(action).or_default().extend(latencies);
        }
        total.errors.extend(tally.errors);
        total.mismatches += tally.mismatches;
        total.verified_bytes += tally.verified_bytes;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = rss.peak();

    let mut all: Vec<Duration> = total.latencies.values().flatten().copied().collect();
    all.sort();
    println!(
        "requests             {} in {elapsed:.1} s = {:.0} requests/s",
        all.len(),
        all.len() as f64 / elapsed
    );
    println!(
        "latency              p50 {:.1} ms, p99 {:.1} ms",
        ms_at(&all, 0.5),
        ms_at(&all, 0.99)
    );
    for action in [Action::Upload, Action::Download, Action::List] {
        let mut latencies = total.latencies.remove(&action).unwrap_or_default();
        latencies.sort();
        println!(
            "  {:<18} {:>7} requests, p50 {:.1} ms, p99 {:.1} ms",
            format!("{action:?}").to_lowercase(),
            latencies.len(),
            ms_at(&latencies, 0.5),
            ms_at(&latencies, 0.99)
        );
    }
    println!("errors               {}", total.errors.len());
    println!("sha256 mismatches    {}", total.mismatches);
    println!(
        "bytes verified       {:.1} MiB",
        total.verified_bytes as f64 / MIB
    );
    println!(
        "server RSS           idle {:.1} MiB, peak {:.1} MiB",
        idle as f64 / MIB,
        peak as f64 / MIB
    );
    for error in total.errors.iter().take(10) {
        println!("  error: {error}");
    }
    if !total.errors.is_empty() || total.mismatches > 0 {
        bail!("the load run had errors or hash mismatches");
    }
    Ok(())
}
