//! The raw cost of storing bytes durably, the anchor of the upload benchmarks: write + fsync + rename + directory
//! fsync, as the store places a blob, measured on the filesystem of the server's data in the same run.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::stats::ms_at;
use crate::data as random;

pub struct Figures {
    pub p50: f64,
    pub p99: f64,
    pub per_second: f64,
}

pub fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort();
    Figures {
        p50: ms_at(&latencies, 0.5),
        p99: ms_at(&latencies, 0.99),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// write + fsync + rename + directory fsync, as the store places a blob, from `clients` threads at once.
pub fn raw_baseline(
    dir: &Path,
    clients: usize,
    size: usize,
    rounds: usize,
) -> anyhow::Result<Figures> {
    let staging = dir.join("staging");
    let placed = dir.join("placed");
    std::fs::create_dir_all(&staging)?;
    std::fs::create_dir_all(&placed)?;
    let started = Instant::now();
    let latencies = std::thread::scope(|scope| -> anyhow::Result<Vec<Duration>> {
        let threads: Vec<_> = (0..clients)
            .map(|n| {
                let (staging, placed) = (&staging, &placed);
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut latencies = Vec::with_capacity(rounds);
                    for round in 0..rounds {
                        let data = random::bytes(size, (n * rounds + round) as u64 + 1);
                        let name = format!("{n}-{round}");
                        let begun = Instant::now();
                        store_durably(staging, placed, &name, &data)?;
                        latencies.push(begun.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            all.extend(thread.join().expect("a baseline thread panicked")?);
        }
        Ok(all)
    })?;
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&staging)?;
    std::fs::remove_dir_all(&placed)?;
    Ok(figures(latencies, elapsed))
}

/// One raw durable store of `data`, as the store places a blob: write to `staging/name`, fsync, rename into
/// `placed`, fsync `placed`.
pub fn store_durably(
    staging: &Path,
    placed: &Path,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let path = staging.join(name);
    let mut file = std::fs::File::create(&path)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&path, placed.join(name))?;
    std::fs::File::open(placed)?.sync_all()
}
