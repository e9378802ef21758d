//! Latency of the change feed: from a change's commit to its arrival at subscribers, with many connected.
//!
//! ```sh
//! cargo build --release --bins --examples && target/release/examples/feed_bench [SUBSCRIBERS] [CHANGES] [-- extra server flags]
//! ```
//!
//! Starts the server (embedded store, or `-- --store mongodb ...`), connects SUBSCRIBERS (default 1,000) SSE
//! subscribers, makes CHANGES (default 200) changes one after another, and prints the p50/p99/max latency from each
//! event's commit time (`at`, stamped in the committing transaction) to its arrival at every subscriber, over all
//! subscriber × change pairs, and the server's memory per connected idle subscriber (resident set growth divided by
//! SUBSCRIBERS). Client and server share the machine's clock. The file-descriptor limit is raised to its maximum
//! (the server raises its own).

use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::bench::{cpu, rss, stats};
use testkit::process;

use futures_util::StreamExt;
use serde_json::{Value, json};

fn percentile(sorted: &[f64], percent: f64) -> f64 {
    stats::percentile(sorted, percent / 100.0).unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ours, server_flags) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (&args[..], &[][..]),
    };
    let subscribers: usize = ours.first().map_or(Ok(1000), |s| s.parse())?;
    let changes: usize = ours.get(1).map_or(Ok(200), |s| s.parse())?;
    raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let flags: Vec<&str> = server_flags.iter().map(String::as_str).collect();
    let server = process::ServerProcess::start(&dir.path().join("data"), &flags);
    let base = server.base.clone();
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(subscribers + 8)
        .build()?;

    // Warm the server up (its first requests allocate what every later one reuses) before its baseline memory.
    client.get(format!("{base}/healthz")).send().await?;
    let rss_before = rss::rss_bytes(pid).unwrap_or_default();
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let (client, base, connected) = (client.clone(), base.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
            let response = client.get(format!("{base}/events")).send().await?;
            anyhow::ensure!(response.status() == 200, "{}", response.status());
            connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            let mut seen = 0;
            // Each subscriber keeps its own figures: one lock shared by all of them was a cost of the bench.
            let mut latencies = Vec::with_capacity(changes);
            while seen < changes {
                let Some(chunk) = body.next().await else {
                    anyhow::bail!("the stream ended after {seen} events");
                };
                let arrived = chrono::Utc::now();
                buffer.push_str(std::str::from_utf8(&chunk?)?);
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                        continue;
                    };
                    // Only the commit time is read (no whole JSON parse): the bench shares the server's cores.
                    let at: chrono::DateTime<chrono::Utc> = data
                        .split_once("\"at\":\"")
                        .and_then(|(_, rest)| rest.split_once('"'))
                        .map(|(at, _)| at)
                        .unwrap_or_default()
                        .parse()?;
                    let ms = (arrived - at).num_microseconds().unwrap_or_default() as f64 / 1000.0;
                    latencies.push(ms);
                    seen += 1;
                }
            }
            Ok(latencies)
        }));
    }
    let started = Instant::now();
    while connected.load(std::sync::atomic::Ordering::SeqCst) < subscribers {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "subscribers did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The streams are open; let the server finish setting each one up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss::rss_bytes(pid).unwrap_or_default();
    println!(
        "{subscribers} SSE subscribers connected in {:?}; server memory {:.1} KiB per idle subscriber ({:.1} MiB \
         -> {:.1} MiB)",
        started.elapsed(),
        rss_after.saturating_sub(rss_before) as f64 / 1024.0 / subscribers as f64,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
    );

    let writes = Instant::now();
    let (server_cpu, own_cpu) = (cpu::seconds(pid), cpu::own_seconds());
    for i in 0..changes {
        let body: Value = client
            .post(format!("{base}/graphql"))
            .json(&json!({
                "query": "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
                "variables": { "id": format!("bench.s{i}") },
            }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(body.get("errors").is_none(), "{body}");
        // Changes spaced out, so each is measured on its own rather than in a burst.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = Vec::with_capacity(subscribers * changes);
    for task in tasks {
        all.extend(task.await??);
    }
    let (server_cpu, own_cpu) = (cpu::seconds(pid) - server_cpu, cpu::own_seconds() - own_cpu);
    all.sort_by(f64::total_cmp);
    println!(
        "{changes} changes in {:?}; {} deliveries; commit -> subscriber latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        writes.elapsed(),
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN),
    );
    // CPU time does not depend on what else runs on the machine the way latency does.
    println!(
        "server CPU {server_cpu:.2} s ({:.2} us per delivery), bench CPU {own_cpu:.2} s, over {:.1} s on {} cores",
        server_cpu * 1e6 / all.len().max(1) as f64,
        writes.elapsed().as_secs_f64(),
        cpu::cores()
    );
    drop(server);
    Ok(())
}

/// Raises this process's file-descriptor limit to its hard limit: each subscriber is a connection.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the structs we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
