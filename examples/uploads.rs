//! Concurrent uploads against the raw cost of storing the same bytes durably, measured in the same run.
//!
//! ```sh
//! cargo build --release --bins --examples && target/release/examples/uploads [clients=50] [size=100KiB] [rounds=20] [-- server flags]
//! ```
//!
//! The baseline: `clients` threads each write `size` bytes to a new file, fsync it, rename it into a directory and
//! fsync that directory, `rounds` times, on the same filesystem as the server's data. Then `clients` concurrent
//! REST uploads (`PUT /service/{id}`, multipart) of `size` fresh bytes each, `rounds` times, against a real server
//! on loopback; then the baseline again, so a disk that got busier meanwhile shows. Prints p50/p99 and operations
//! per second of each, and the uploads' p99 as a multiple of the baseline's. Fails (exit 1) on any error.

use std::time::{Duration, Instant};
use testkit::data as random;
use testkit::process;

use anyhow::{Context, bail};
use bytesize::ByteSize;
use serde_json::json;
use testkit::bench::baseline::{Figures, figures, raw_baseline};

async fn uploads(
    base: &str,
    clients: usize,
    size: usize,
    rounds: usize,
) -> anyhow::Result<Figures> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(60))
        .build()?;
    for n in 0..clients {
        client
            .post(format!("{base}/service"))
            .json(&json!({ "id": format!("uploads.c{n:03}") }))
            .send()
            .await?
            .error_for_status()?;
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            let (client, base) = (client.clone(), base.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(rounds);
                for round in 0..rounds {
                    // Offset from the baseline's seeds: fresh bytes for the store too.
                    let data = random::bytes(size, (1 << 40) + (n * rounds + round) as u64);
                    let form = reqwest::multipart::Form::new().part(
                        "file",
                        reqwest::multipart::Part::bytes(data).file_name("f.bin"),
                    );
                    let begun = Instant::now();
                    let response = client
                        .put(format!("{base}/service/uploads.c{n:03}"))
                        .multipart(form)
                        .send()
                        .await?;
                    let status = response.status();
                    if status != 204 {
                        bail!("upload answered {status}: {}", response.text().await?);
                    }
                    latencies.push(begun.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(figures(all, started.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).take_while(|a| a != "--");
    let clients: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let size = args
        .next()
        .map_or(Ok(ByteSize::kib(100)), |a| a.parse::<ByteSize>())
        .map_err(|e| anyhow::anyhow!("size: {e}"))?
        .as_u64() as usize;
    let rounds: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let server_args: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();

    let dir = tempfile::tempdir_in(".")?;
    let flags: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = process::ServerProcess::start(&dir.path().join("data"), &flags);
    println!(
        "uploads: {clients} clients x {rounds} rounds of {} against {} (loopback)",
        ByteSize::b(size as u64),
        server.base
    );
    let before = raw_baseline(dir.path(), clients, size, rounds).context("the raw baseline")?;
    let measured = uploads(&server.base, clients, size, rounds).await?;
    let after = raw_baseline(dir.path(), clients, size, rounds).context("the raw baseline")?;
    let show = |name: &str, f: &Figures| {
        println!(
            "{name:<34} p50 {:>6.1} ms, p99 {:>6.1} ms, {:>6.0}/s",
            f.p50, f.p99, f.per_second
        );
    };
    show("raw write+fsync+rename+dir fsync", &before);
    show("REST uploads", &measured);
    show("raw, again", &after);
    let baseline_p99 = (before.p99 + after.p99) / 2.0;
    println!(
        "uploads p99 / raw p99 (mean of both runs) = {:.2}",
        measured.p99 / baseline_p99
    );
    Ok(())
}
