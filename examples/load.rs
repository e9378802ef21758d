//! An open-loop load test on loopback: requests arrive at a fixed rate whatever the server does (uploads of 100 KiB,
//! verified downloads and filtered lists), and each one's latency is measured from its scheduled start, so a server
//! that falls behind shows it (no coordinated omission). It sweeps the rate up to saturation, then measures at 25,
//! 50 and 75 % of the capacity it found, and the server's CPU time per request of each kind. It stops by itself.
//!
//! Capacity is the highest rate at which fewer than 1 % of the requests fail or are late (answered more than
//! 250 ms after their scheduled start): the sweep grows the rate by half until a step misses that (twice in a row:
//! a missed step is run again once), then halves the interval between the last rate kept up with and the first
//! missed twice. The generator's own slip (how late
//! it sent requests after their schedule) is printed too: a large one means the generator, not the server, fell
//! behind.
//!
//! ```sh
//! cargo build --release --bins --examples && target/release/examples/load [phase-seconds=10] [--capacity N] [-- server flags]
//! ```
//!
//! `--capacity N` skips the sweep and measures at 25, 50 and 75 % of N (the same rates for two builds compared back
//! to back).
//!
//! The uploads' anchor, measured in the same run on the filesystem of the server's data: the 50 % phase's schedule
//! again (the same seed) with each upload replaced by the raw write + fsync + rename + directory fsync of its bytes,
//! made by the generator at the upload's moment beside the same downloads and lists, so the raw stores meet the
//! same machine and disk; and the raw store alone, before the phases and after. The goal at 50 % of capacity:
//! uploads p99 under twice the raw stores' p99 under the same load, downloads and lists p99 under 10 ms, no error.
//! The generator runs on the server's cores; it prints the CPU it took. It fails (exit 1) on any error or hash
//! mismatch at the measured rates.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::bench::baseline;
use testkit::bench::cpu;
use testkit::data as random;
use testkit::graphql::upload_service_file;
use testkit::process;

use anyhow::bail;
use serde_json::{Value, json};
use testkit::bench::stats::ms_at;
use testkit::data::Rng;
use testkit::sha256_hex;
use tokio::sync::Mutex;

const SHARED_FILES: usize = 20;
const UPLOAD_BYTES: usize = 100 * 1024;
/// Components the uploads rotate over, so that concurrent uploads rarely replace the same file.
const UPLOAD_TARGETS: usize = 64;
/// Requests in flight beyond which the generator counts the next ones as failed: the server is past saturation.
const MAX_IN_FLIGHT: usize = 4_000;
/// A phase's requests must all be answered within this after its last arrival.
const DRAIN: Duration = Duration::from_secs(5);
/// A request answered later than this after its scheduled start is late.
const LATE: Duration = Duration::from_millis(250);
/// The share of failed or late requests a rate may have and still count as kept up with.
const MISS_ALLOWED: f64 = 0.01;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Upload,
    Download,
    List,
}

const KINDS: [Kind; 3] = [Kind::Upload, Kind::Download, Kind::List];

impl Kind {
    /// The mix: 20 % uploads, 50 % downloads, 30 % lists.
    fn of(roll: u64) -> Kind {
        match roll % 100 {
            0..20 => Kind::Upload,
            20..70 => Kind::Download,
            _ => Kind::List,
        }
    }

    fn share(self) -> f64 {
        match self {
            Kind::Upload => 0.2,
            Kind::Download => 0.5,
            Kind::List => 0.3,
        }
    }
}

struct Target {
    base: String,
    /// Where the anchor's raw stores go: `staging/` and `placed/`, on the filesystem of the server's data.
    raw_dir: std::path::PathBuf,
    client: reqwest::Client,
    shared: Vec<(String, String)>,
}

#[derive(Default)]
struct Outcomes {
    latencies: [Vec<Duration>; 3],
    errors: Vec<String>,
    /// How late the generator sent each request after its schedule.
    slips: Vec<Duration>,
}

struct Phase {
    offered: usize,
    outcomes: Outcomes,
    wall: Duration,
    server_cpu: f64,
    own_cpu: f64,
}

impl Phase {
    fn answered(&self) -> usize {
        self.outcomes.latencies.iter().map(Vec::len).sum()
    }

    /// The phase's latencies of one kind (all kinds with `None`), sorted.
    fn sorted(&self, kind: Option<Kind>) -> Vec<Duration> {
        let mut all: Vec<Duration> = KINDS
            .iter()
            .enumerate()
            .filter(|(_, k)| kind.is_none_or(|kind| kind == **k))
            .flat_map(|(i, _)| self.outcomes.latencies[i].iter().copied())
            .collect();
        all.sort();
        all
    }

    /// Requests answered later than `LATE` after their scheduled start.
    fn late(&self) -> usize {
        self.outcomes
            .latencies
            .iter()
            .flatten()
            .filter(|l| **l > LATE)
            .count()
    }

    /// Requests that failed, late or never answered.
    fn missed(&self) -> usize {
        self.offered - self.answered() + self.late()
    }

    /// Whether the server kept up: fewer than 1 % of the requests failed or late (which bounds p99 by `LATE`).
    fn sustained(&self) -> bool {
        (self.missed() as f64) < MISS_ALLOWED * self.offered as f64
    }
}

/// One request; an upload carries its payload and the payload's sha256, made before the clock starts.
enum Work {
    Upload(Vec<u8>, String),
    /// The anchor in place of an upload: the raw durable store of the same bytes, by the generator.
    RawStore(Vec<u8>),
    Download,
    List,
}

async fn request(target: &Target, work: Work, n: u64) -> anyhow::Result<()> {
    match work {
        Work::Upload(data, expected) => {
            let id = format!("load.up-{:02}", n % UPLOAD_TARGETS as u64);
            upload_service_file(&target.client, &target.base, &id, data, &expected).await
        }
        Work::RawStore(data) => {
            let (staging, placed) = (
                target.raw_dir.join("staging"),
                target.raw_dir.join("placed"),
            );
            tokio::task::spawn_blocking(move || {
                baseline::store_durably(&staging, &placed, &format!("{n:016x}"), &data)
            })
            .await??;
            Ok(())
        }
        Work::Download => {
            let (id, expected) = &target.shared[(n % target.shared.len() as u64) as usize];
            let body = target
                .client
                .get(format!("{}/service/{id}", target.base))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            if sha256_hex(&body) != *expected {
                bail!("sha256 mismatch on {id}");
            }
            Ok(())
        }
        Work::List => {
            let query = format!(
                "{{ services(filter: {{needs: {{maxRam: {}, libraries: [{{name: \"torch\", version: \"2.{}\"}}]}}}}, first: 20) \
                 {{ totalCount edges {{ node {{ id file {{ size }} }} }} }} }}",
                n % 16,
                n % 5
            );
            let response: Value = target
                .client
                .post(format!("{}/graphql", target.base))
                .json(&json!({ "query": query }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if response.get("errors").is_some() {
                bail!("list: {response}");
            }
            Ok(())
        }
    }
}

/// What the upload share of a phase does.
#[derive(Clone, Copy, PartialEq)]
enum Uploads {
    /// Uploads to the server.
    Server,
    /// The anchor: the same bytes stored durably by the generator, at the same moments, beside the same downloads
    /// and lists.
    RawStores,
}

/// Offers `rate` requests per second for `seconds`, of `only` one kind or of the mix.
async fn phase(
    target: &Arc<Target>,
    server: u32,
    rate: f64,
    seconds: f64,
    only: Option<Kind>,
    uploads: Uploads,
    seed: u64,
) -> Phase {
    let offered = (rate * seconds).round().max(1.0) as usize;
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut rng = Rng::seeded(seed);
    // The whole schedule, uploads' fresh bytes (nothing deduplicated) and their hashes included, before the clock.
    let schedule: Vec<(Kind, u64, Work)> = (0..offered)
        .map(|_| {
            let kind = only.unwrap_or_else(|| Kind::of(rng.next_u64()));
            let n = rng.next_u64();
            let work = match kind {
                Kind::Upload if uploads == Uploads::RawStores => {
                    Work::RawStore(random::bytes(UPLOAD_BYTES, n))
                }
                Kind::Upload => {
                    let data = random::bytes(UPLOAD_BYTES, n);
                    let sha = sha256_hex(&data);
                    Work::Upload(data, sha)
                }
                Kind::Download => Work::Download,
                Kind::List => Work::List,
            };
            (kind, n, work)
        })
        .collect();
    let (server_before, own_before) = (cpu::seconds(server), cpu::own_seconds());
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(offered);
    for (i, (kind, n, work)) in schedule.into_iter().enumerate() {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        outcomes.lock().await.slips.push(scheduled.elapsed());
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            outcomes
                .lock()
                .await
                .errors
                .push(format!("{MAX_IN_FLIGHT} requests in flight"));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (target, outcomes, in_flight) = (target.clone(), outcomes.clone(), in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let result = request(&target, work, n).await;
            let latency = scheduled.elapsed();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut outcomes = outcomes.lock().await;
            match result {
                Ok(()) => outcomes.latencies[kind as usize].push(latency),
                Err(e) => outcomes.errors.push(format!("{kind:?}: {e:#}")),
            }
        }));
    }
    let drained = tokio::time::timeout(DRAIN, async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    let wall = start.elapsed();
    let mut outcomes = std::mem::take(&mut *outcomes.lock().await);
    if drained.is_err() {
        outcomes.errors.push(format!(
            "requests still unanswered {DRAIN:?} after the last arrival"
        ));
    }
    Phase {
        offered,
        outcomes,
        wall,
        server_cpu: cpu::seconds(server) - server_before,
        own_cpu: cpu::own_seconds() - own_before,
    }
}

fn show(label: &str, phase: &Phase) {
    let mut slips = phase.outcomes.slips.clone();
    slips.sort();
    println!(
        "{label}: {} offered, {} answered in {:.1} s, {} errors, {} late; server CPU {:.2} s, generator CPU {:.2} s \
         ({:.0} % of the machine), generator slip p99 {:.2} ms",
        phase.offered,
        phase.answered(),
        phase.wall.as_secs_f64(),
        phase.outcomes.errors.len(),
        phase.late(),
        phase.server_cpu,
        phase.own_cpu,
        100.0 * phase.own_cpu / (phase.wall.as_secs_f64() * cpu::cores()),
        ms_at(&slips, 0.99)
    );
    for kind in KINDS {
        let sorted = phase.sorted(Some(kind));
        if sorted.is_empty() {
            continue;
        }
        println!(
            "  {:<9} {:>6} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            format!("{kind:?}").to_lowercase(),
            sorted.len(),
            ms_at(&sorted, 0.5),
            ms_at(&sorted, 0.99),
            ms_at(&sorted, 1.0)
        );
    }
    for error in phase.outcomes.errors.iter().take(3) {
        println!("  error: {error}");
    }
}

/// Whether the server keeps up with `rate`; a rate missed once is tried again, and counts as missed only if missed
/// twice (on a machine shared with other work, a burst of someone else's load can make one step miss).
async fn kept_up(
    target: &Arc<Target>,
    server: u32,
    rate: f64,
    seconds: f64,
    label: &str,
    seed: u64,
) -> bool {
    for attempt in 0..2 {
        let run = phase(
            target,
            server,
            rate,
            seconds,
            None,
            Uploads::Server,
            seed + 1000 * attempt,
        )
        .await;
        show(label, &run);
        if run.sustained() {
            return true;
        }
    }
    false
}

async fn setup(base: &str, client: &reqwest::Client) -> anyhow::Result<Vec<(String, String)>> {
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
        testkit::graphql::query(client, base, &mutation, json!({})).await?;
        if i < SHARED_FILES {
            let len = 64 * 1024 + rng.below(1024 * 1024) as usize;
            let data = rng.bytes(len);
            let sha = sha256_hex(&data);
            upload_service_file(client, base, &id, data, &sha).await?;
            shared.push((id, sha));
        }
    }
    for n in 0..UPLOAD_TARGETS {
        testkit::graphql::create_service(client, base, &format!("load.up-{n:02}")).await?;
    }
    Ok(shared)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ours = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (ours, server_args) = (&args[..ours], args.get(ours + 1..).unwrap_or_default());
    let mut seconds = 10.0;
    let mut given_capacity: Option<f64> = None;
    let mut ours = ours.iter();
    while let Some(arg) = ours.next() {
        match arg.as_str() {
            "--capacity" => {
                let value = ours
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--capacity needs a rate"))?;
                given_capacity = Some(value.parse()?);
            }
            value => seconds = value.parse()?,
        }
    }

    let dir = tempfile::tempdir_in(".")?;
    let flags: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let server = process::ServerProcess::start(&dir.path().join("data"), &flags);
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .timeout(Duration::from_secs(30))
        .build()?;
    let shared = setup(&server.base, &client).await?;
    let raw_dir = dir.path().join("raw");
    let target = Arc::new(Target {
        base: server.base.clone(),
        raw_dir: raw_dir.clone(),
        client,
        shared,
    });
    let raw = baseline::raw_baseline(dir.path(), 1, UPLOAD_BYTES, 300)?;
    println!(
        "load: open loop against {} (loopback), {seconds} s phases; raw write+fsync+rename+dir fsync of 100 KiB, \
         alone: p50 {:.2} ms, p99 {:.2} ms",
        server.base, raw.p50, raw.p99
    );

    let capacity = match given_capacity {
        Some(capacity) => {
            println!("capacity: {capacity:.0} requests/s (given, no sweep)");
            capacity
        }
        None => sweep(&target, pid, seconds).await?,
    };

    let mut failed = false;
    let mut at_half = None;
    for percent in [25.0, 50.0, 75.0] {
        let rate = capacity * percent / 100.0;
        let run = phase(
            &target,
            pid,
            rate,
            seconds,
            None,
            Uploads::Server,
            schedule_seed(percent),
        )
        .await;
        show(&format!("{percent:.0} % of capacity ({rate:.0}/s)"), &run);
        failed |= !run.outcomes.errors.is_empty();
        if percent == 50.0 {
            at_half = Some(run);
        }
    }
    // The anchor under the same load: the 50 % phase's schedule again (same seed), each upload replaced by the raw
    // durable store of its bytes, so the raw stores meet the same downloads, lists, generator and disk.
    std::fs::create_dir_all(raw_dir.join("staging"))?;
    std::fs::create_dir_all(raw_dir.join("placed"))?;
    let anchor = phase(
        &target,
        pid,
        capacity * 0.5,
        seconds,
        None,
        Uploads::RawStores,
        schedule_seed(50.0),
    )
    .await;
    std::fs::remove_dir_all(&raw_dir)?;
    show(
        &format!(
            "50 % of capacity ({:.0}/s), uploads replaced by raw write+fsync+rename+dir fsync",
            capacity * 0.5
        ),
        &anchor,
    );
    failed |= !anchor.outcomes.errors.is_empty();
    let raw_again = baseline::raw_baseline(dir.path(), 1, UPLOAD_BYTES, 300)?;
    println!(
        "raw write+fsync+rename+dir fsync of 100 KiB alone, again: p50 {:.2} ms, p99 {:.2} ms",
        raw_again.p50, raw_again.p99
    );

    println!(
        "server CPU per request at 50 % of capacity, each kind alone at its share of the rate:"
    );
    for kind in KINDS {
        let run = phase(
            &target,
            pid,
            capacity * 0.5 * kind.share(),
            seconds,
            Some(kind),
            Uploads::Server,
            200 + kind as u64,
        )
        .await;
        failed |= !run.outcomes.errors.is_empty();
        println!(
            "  {:<9} {:.3} ms CPU per request ({} requests)",
            format!("{kind:?}").to_lowercase(),
            1000.0 * run.server_cpu / run.answered().max(1) as f64,
            run.answered()
        );
    }
    if let Some(half) = at_half {
        let p99 = |kind| ms_at(&half.sorted(Some(kind)), 0.99);
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let anchor_p99 = ms_at(&anchor.sorted(Some(Kind::Upload)), 0.99);
        let uploads = p99(Kind::Upload) / anchor_p99;
        println!("goal at 50 %:");
        println!(
            "  uploads p99 {:.2} ms = {uploads:.2}x the raw stores' p99 under the same load, {anchor_p99:.2} ms (< 2x): {}",
            p99(Kind::Upload),
            verdict(uploads < 2.0)
        );
        println!(
            "    ({:.1}x / {:.1}x the raw p99 alone, {:.2} ms before the phases / {:.2} ms after)",
            p99(Kind::Upload) / raw.p99,
            p99(Kind::Upload) / raw_again.p99,
            raw.p99,
            raw_again.p99
        );
        for kind in [Kind::Download, Kind::List] {
            println!(
                "  {:<9} p99 {:.2} ms (< 10 ms): {}",
                format!("{kind:?}").to_lowercase(),
                p99(kind),
                verdict(p99(kind) < 10.0)
            );
        }
        let errors = half.offered - half.answered();
        println!("  errors {errors} (0): {}", verdict(errors == 0));
    }
    if failed {
        bail!("requests failed at the measured rates");
    }
    Ok(())
}

/// The sweep: the rate grows by half until the server no longer keeps up, then two halvings of the interval between
/// the last rate kept up with and the first missed; the capacity is the highest rate kept up with.
async fn sweep(target: &Arc<Target>, pid: u32, seconds: f64) -> anyhow::Result<f64> {
    let mut rate = 100.0;
    let mut capacity = 0.0;
    let mut missed = None;
    for step in 0..14 {
        if !kept_up(
            target,
            pid,
            rate,
            seconds,
            &format!("sweep {rate:.0}/s"),
            step,
        )
        .await
        {
            missed = Some(rate);
            break;
        }
        capacity = rate;
        rate *= 1.5;
    }
    if capacity == 0.0 {
        bail!("the server did not keep up with {rate:.0} requests/s");
    }
    if let Some(mut above) = missed {
        for step in 0..2 {
            let rate = (capacity + above) / 2.0;
            if kept_up(
                target,
                pid,
                rate,
                seconds,
                &format!("refine {rate:.0}/s"),
                50 + step,
            )
            .await
            {
                capacity = rate;
            } else {
                above = rate;
            }
        }
    }
    println!(
        "capacity: {capacity:.0} requests/s (the highest rate with under 1 % of requests failed or answered more \
         than {} ms after their scheduled start)",
        LATE.as_millis()
    );
    Ok(capacity)
}

/// Seed of the schedule at `percent` % of capacity: the uploads' anchor replays the 50 % phase's.
fn schedule_seed(percent: f64) -> u64 {
    100 + percent as u64
}
