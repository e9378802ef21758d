//! A fleet on loopback (issue #26): N devices in four hardware classes follow `production` of one model with their
//! id, download when their version changes, and report what they run and how it goes, each on an open-loop
//! schedule; one class degrades on the new version (more errors, slower). Once every device has reported, a staged
//! rollout of the new version starts; the simulator follows it and prints how long the healthy classes took to reach
//! 100 %, how long the bad class took to revert, how many answers after a class's outcome still gave its devices
//! the version it no longer has (must be 0), and the server's CPU time and peak RSS. It stops by itself.
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/fleet                                    # 1,000 devices, one report every 4 s each
//! target/release/examples/fleet --devices 10000 --period 20 --step-seconds 50
//! target/release/examples/fleet -- --store mongodb --mongodb-uri mongodb://...   # extra server flags
//! ```
//!
//! Each device wakes every `--period` seconds (its first wake at a random offset, each next one `period` after
//! the previous *scheduled* one, ± `--jitter`), whatever the server does: a device whose request was slow does not
//! wake later, and latency is counted from the scheduled wake (no coordinated omission). At each wake it reports
//! the period's health for the version it ran (`POST /devices/{id}/report`, with a device token), then asks for
//! `GET /model/fleet-model/@production?device={id}` with `If-None-Match` of the file it has: `304` keeps it, `200`
//! is the new file, which it takes (its sha256 names the version; `X-Model-Version` must agree when sent).
//! A step must last at least two periods: one for a device to switch, one for it to report on the new version.
//! Every request of a device of a finished class, sent after the simulator saw that class finish (it polls the
//! rollout every 200 ms, so the figures are up to that late), must get its class's final version.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};
use testkit::bench::rss::RssSampler;
use testkit::bench::{cpu, stats};
use testkit::data::Rng;
use testkit::{process, sha256_hex};

const MODEL: &str = "fleet-model";
const ALIAS: &str = "production";
const VERSIONS: [&str; 2] = ["1.0", "2.0"];
const WRITE_TOKEN: &str = "fleet-simulator-write-token";
const DEVICE_TOKEN: &str = "fleet-simulator-device-token";
/// How often the simulator reads the rollout: the resolution of its timings.
const POLL: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
#[command(about = "Simulates a fleet of devices through a staged rollout (issue #26)")]
struct Args {
    /// Devices, spread evenly over the four hardware classes.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Seconds between two wakes of a device (report, then ask for the alias).
    #[arg(long, default_value_t = 4.0)]
    period: f64,
    /// Each wake moves by up to this share of the period, either way.
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// The rollout's steps, in percent.
    #[arg(long, default_value = "10,50,100", value_delimiter = ',')]
    steps: Vec<u32>,
    /// Seconds each step lasts before its gate.
    #[arg(long, default_value_t = 12)]
    step_seconds: u64,
    /// The gate: reports on the new version a class needs before it may advance.
    #[arg(long, default_value_t = 5)]
    min_reports: u32,
    /// The gate: highest error rate on the new version.
    #[arg(long, default_value_t = 0.05)]
    max_error_rate: f64,
    /// The gate: highest p99 ratio, new over old.
    #[arg(long, default_value_t = 1.5)]
    max_p99_ratio: f64,
    /// The class made to degrade on the new version (0: x86 CPU, 1: Jetson, 2: GPU server, 3: Raspberry Pi).
    #[arg(long, default_value_t = 1)]
    bad_class: usize,
    /// Longest the rollout may take, in seconds, before the simulator gives up.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Size of each model file in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    file_size: usize,
    /// Worker threads of the simulator's one tokio runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Extra flags for the server (after `--`).
    #[arg(last = true)]
    server: Vec<String>,
}

/// A kind of device: what it reports as hardware, and how inference goes on it.
struct Template {
    label: &'static str,
    prefix: &'static str,
    hardware: Value,
    /// Requests per second the device serves.
    rate: f64,
    /// Its p99 latency in ms on a healthy version.
    p99_ms: f64,
}

fn templates() -> Vec<Template> {
    vec![
        Template {
            label: "x86 CPU box",
            prefix: "cpu",
            hardware: json!({"platform": {"os": "linux", "arch": "amd64"}, "ram": 16,
                "libraries": [{"name": "onnxruntime", "version": "1.18.0"}]}),
            rate: 20.0,
            p99_ms: 35.0,
        },
        Template {
            label: "Jetson Orin",
            prefix: "orin",
            hardware: json!({"platform": {"os": "linux", "arch": "arm64", "variant": "v8",
                "accelerators": [{"name": "cuda", "version": "12.2"}]}, "gpu": true, "gpuMemory": 7.4, "ram": 8,
                "libraries": [{"name": "onnxruntime", "version": "1.18.0"}]}),
            rate: 30.0,
            p99_ms: 20.0,
        },
        Template {
            label: "GPU server",
            prefix: "gpu",
            hardware: json!({"platform": {"os": "linux", "arch": "amd64",
                "accelerators": [{"name": "cuda", "version": "12.4"}]}, "gpu": true, "gpuMemory": 24, "ram": 64,
                "libraries": [{"name": "onnxruntime", "version": "1.18.0"}]}),
            rate: 200.0,
            p99_ms: 8.0,
        },
        Template {
            label: "Raspberry Pi",
            prefix: "rpi",
            hardware: json!({"platform": {"os": "linux", "arch": "arm64"}, "ram": 4,
                "libraries": [{"name": "onnxruntime", "version": "1.18.0"}]}),
            rate: 5.0,
            p99_ms: 120.0,
        },
    ]
}

/// What the devices share with the simulator's controller.
struct Fleet {
    base: String,
    client: reqwest::Client,
    templates: Vec<Template>,
    /// The two files' sha256, by version index.
    digests: [String; 2],
    /// Per device, the index of the version it runs.
    running: Vec<AtomicU8>,
    /// Devices with at least one accepted report.
    reported: AtomicUsize,
    /// The server's hardware class of each template, from a report's answer.
    classes: Vec<OnceLock<String>>,
    stop: AtomicBool,
    bad: usize,
    period: Duration,
    jitter: f64,
}

impl Fleet {
    fn template_of(&self, device: usize) -> usize {
        device % self.templates.len()
    }

    fn id(&self, device: usize) -> String {
        format!(
            "{}-{device:05}",
            self.templates[self.template_of(device)].prefix
        )
    }
}

/// What one device saw.
#[derive(Default)]
struct DeviceLog {
    /// Milliseconds from the scheduled wake to each answer.
    resolve_ms: Vec<f32>,
    report_ms: Vec<f32>,
    /// Each answer to the alias: when its request was sent, and the version it left the device on.
    answers: Vec<(Instant, u8)>,
    downloads: usize,
    failures: usize,
    first_failure: Option<String>,
    /// Wakes that started more than a tenth of a period after their schedule: the simulator fell behind.
    late_wakes: usize,
}

impl DeviceLog {
    fn failed(&mut self, what: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(what);
    }
}

async fn device(fleet: Arc<Fleet>, n: usize, start: Instant) -> DeviceLog {
    let mut log = DeviceLog::default();
    let template = fleet.template_of(n);
    let id = fleet.id(n);
    let mut rng = Rng::seeded(n as u64 + 1);
    let unit = |rng: &mut Rng| rng.below(1 << 20) as f64 / (1 << 20) as f64;
    let period = fleet.period.as_secs_f64();
    let mut scheduled = start + fleet.period.mul_f64(unit(&mut rng));
    let resolve_url = format!("{}/model/{MODEL}/@{ALIAS}?device={id}", fleet.base);
    let report_url = format!("{}/devices/{id}/report", fleet.base);
    while !fleet.stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(scheduled.into()).await;
        if fleet.stop.load(Ordering::Relaxed) {
            break;
        }
        if scheduled.elapsed() > fleet.period / 10 {
            log.late_wakes += 1;
        }
        let version = fleet.running[n].load(Ordering::Relaxed);
        let body = report(&fleet, template, version, period, &mut rng);
        let sent = fleet
            .client
            .post(&report_url)
            .bearer_auth(DEVICE_TOKEN)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 200 => {
                let answer: Value = response.json().await.unwrap_or_default();
                if let Some(class) = answer["hardwareClass"].as_str() {
                    let known = fleet.classes[template].get_or_init(|| class.to_owned());
                    if known != class {
                        log.failed(format!("{id} is in {class}, its kind in {known}"));
                    }
                }
                if log.report_ms.is_empty() {
                    fleet.reported.fetch_add(1, Ordering::Relaxed);
                }
                log.report_ms.push(ms_since(scheduled));
            }
            Ok(response) => log.failed(format!("report: {}", response.status())),
            Err(error) => log.failed(format!("report: {error}")),
        }
        let asked = Instant::now();
        match resolve(&fleet, &resolve_url, version).await {
            Ok((now, downloaded)) => {
                fleet.running[n].store(now, Ordering::Relaxed);
                log.answers.push((asked, now));
                log.downloads += usize::from(downloaded);
                log.resolve_ms.push(ms_since(scheduled));
            }
            Err(error) => log.failed(format!("resolve: {error:#}")),
        }
        let shift = (unit(&mut rng) * 2.0 - 1.0) * fleet.jitter;
        scheduled += Duration::from_secs_f64(period * (1.0 + shift));
    }
    log
}

fn ms_since(at: Instant) -> f32 {
    at.elapsed().as_secs_f32() * 1000.0
}

/// The report of one period on `version`: the bad class degrades on the new version.
fn report(fleet: &Fleet, template: usize, version: u8, period: f64, rng: &mut Rng) -> Value {
    let kind = &fleet.templates[template];
    let noise = |rng: &mut Rng, spread: f64| 1.0 + (rng.below(2001) as f64 / 1000.0 - 1.0) * spread;
    let degraded = template == fleet.bad && version == 1;
    let requests = (kind.rate * period * noise(rng, 0.2)).round().max(1.0) as u64;
    let error_rate = if degraded { 0.08 } else { 0.002 };
    let errors = ((requests as f64 * error_rate * noise(rng, 0.5)).round() as u64).min(requests);
    let p99 = kind.p99_ms * if degraded { 2.5 } else { 1.0 } * noise(rng, 0.1);
    json!({
        "device": kind.hardware,
        "running": [{"kind": "model", "name": MODEL, "version": VERSIONS[version as usize],
                     "sha256": fleet.digests[version as usize]}],
        "health": {"requests": requests, "errors": errors, "p99Ms": (p99 * 10.0).round() / 10.0},
    })
}

/// Asks for the alias with the device's file as `If-None-Match`; answers the version the device runs next and
/// whether it downloaded it.
async fn resolve(fleet: &Fleet, url: &str, version: u8) -> anyhow::Result<(u8, bool)> {
    let response = fleet
        .client
        .get(url)
        .bearer_auth(DEVICE_TOKEN)
        .header(
            "if-none-match",
            format!("\"{}\"", fleet.digests[version as usize]),
        )
        .send()
        .await?;
    match response.status().as_u16() {
        304 => Ok((version, false)),
        200 => {
            let said = response
                .headers()
                .get("x-model-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let digest = sha256_hex(&response.bytes().await?);
            let Some(got) = fleet.digests.iter().position(|d| *d == digest) else {
                bail!("a file that is neither version: {digest}");
            };
            if let Some(said) = said {
                ensure!(
                    said == VERSIONS[got],
                    "X-Model-Version {said} with the file of {}",
                    VERSIONS[got]
                );
            }
            Ok((got as u8, true))
        }
        status => bail!("{status}"),
    }
}

async fn gql(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let body: Value = client
        .post(format!("{base}/graphql"))
        .bearer_auth(WRITE_TOKEN)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .json()
        .await?;
    if let Some(errors) = body.get("errors") {
        bail!("{errors}");
    }
    Ok(body["data"].clone())
}

/// The two versions with their files, and `production` on the first.
async fn publish(client: &reqwest::Client, base: &str, files: &[Vec<u8>; 2]) -> anyhow::Result<()> {
    for (version, file) in VERSIONS.iter().zip(files) {
        gql(
            client,
            base,
            "mutation($name: String!, $version: String!) { createModel(input: {name: $name, version: $version, \
             library: \"onnxruntime\"}) { name } }",
            json!({"name": MODEL, "version": version}),
        )
        .await?;
        let form = testkit::graphql::upload_form(
            "mutation($file: Upload!, $name: String!, $version: String!) { uploadModelFile(name: $name, \
             version: $version, file: $file) { file { sha256 } } }",
            json!({"name": MODEL, "version": version}),
            file.clone(),
            "model.onnx",
        );
        let answer: Value = testkit::graphql::post_upload(client, base, form)
            .bearer_auth(WRITE_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            answer["data"]["uploadModelFile"]["file"]["sha256"] == sha256_hex(file),
            "upload of {version}: {answer}"
        );
    }
    gql(
        client,
        base,
        "mutation($name: String!, $alias: String!, $version: String!) { setModelAlias(name: $name, alias: $alias, \
         version: $version) { name } }",
        json!({"name": MODEL, "alias": ALIAS, "version": VERSIONS[0]}),
    )
    .await?;
    Ok(())
}

const ROLLOUT: &str = "query($id: ID!) { rollout(id: $id) { state classes { hardwareClass percent state reason \
    candidate { devices requests errorRate p99Ms } baseline { devices requests errorRate p99Ms } } } }";

/// What the simulator saw of one class.
#[derive(Default)]
struct ClassWatch {
    percent: u32,
    state: String,
    reason: Option<String>,
    figures: Option<(Value, Value)>,
    /// Seconds from the start to the first poll that showed 100 %, and when that poll was answered.
    at_full: Option<(f64, Instant)>,
    /// When the first poll showed COMPLETED or REVERTED.
    finished: Option<(f64, Instant)>,
    /// Per step percent, the share of the class's devices on the new version at the last poll of that step.
    shares: BTreeMap<u32, f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.devices >= 4, "at least one device per class");
    ensure!(args.bad_class < 4, "--bad-class is 0 to 3");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Each device request or subscriber is a connection: the hard limit, as the server raises its own.
    component_repository::server::raise_fd_limit();
    let period = Duration::from_secs_f64(args.period);
    // Three periods: a device that missed a wake is still live, one that stopped is gone soon after.
    let ttl = format!(
        "--device-report-ttl={}s",
        (args.period * 3.0).ceil().max(1.0)
    );
    let tokens = [
        format!("--write-tokens={WRITE_TOKEN}"),
        format!("--device-tokens={DEVICE_TOKEN}"),
    ];
    let mut flags: Vec<&str> = vec![&ttl, &tokens[0], &tokens[1]];
    flags.extend(args.server.iter().map(String::as_str));
    let dir = tempfile::tempdir()?;
    let server = process::ServerProcess::start(&dir.path().join("data"), &flags);
    let pid = server.child.id();
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;
    let files = [
        testkit::bytes(args.file_size, 261),
        testkit::bytes(args.file_size, 262),
    ];
    publish(&client, &base, &files).await?;

    let fleet = Arc::new(Fleet {
        base: base.clone(),
        client: client.clone(),
        templates: templates(),
        digests: [sha256_hex(&files[0]), sha256_hex(&files[1])],
        running: (0..args.devices).map(|_| AtomicU8::new(0)).collect(),
        reported: AtomicUsize::new(0),
        classes: (0..4).map(|_| OnceLock::new()).collect(),
        stop: AtomicBool::new(false),
        bad: args.bad_class,
        period,
        jitter: args.jitter.clamp(0.0, 0.5),
    });
    let rss = RssSampler::start(pid);
    let (cpu_start, own_start) = (cpu::seconds(pid), cpu::own_seconds());
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.devices)
        .map(|n| tokio::spawn(device(fleet.clone(), n, start)))
        .collect();

    // Every device has reported once: the rollout's classes are the whole fleet's.
    let warm = Instant::now();
    while fleet.reported.load(Ordering::Relaxed) < args.devices {
        ensure!(
            warm.elapsed() < period * 3 + Duration::from_secs(30),
            "only {} of {} devices reported",
            fleet.reported.load(Ordering::Relaxed),
            args.devices
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warm_up = warm.elapsed();
    let class_names: Vec<String> = fleet
        .classes
        .iter()
        .map(|c| c.get().cloned().unwrap_or_default())
        .collect();

    let started = gql(
        &client,
        &base,
        "mutation($input: StartRolloutInput!) { startRollout(input: $input) { id classes { hardwareClass } } }",
        json!({"input": {"model": MODEL, "alias": ALIAS, "version": VERSIONS[1], "steps": args.steps,
            "stepSeconds": args.step_seconds, "gate": {"maxErrorRate": args.max_error_rate,
            "maxP99Ratio": args.max_p99_ratio, "minReports": args.min_reports}}}),
    )
    .await
    .context("startRollout")?;
    let rollout_start = Instant::now();
    let id = started["startRollout"]["id"]
        .as_str()
        .context("a rollout id")?
        .to_owned();
    let (cpu_rollout, own_rollout) = (cpu::seconds(pid), cpu::own_seconds());

    let mut watch: Vec<ClassWatch> = (0..4).map(|_| ClassWatch::default()).collect();
    let mut state = String::from("RUNNING");
    let mut anonymous_wrong = 0usize;
    let mut anonymous_asked = 0usize;
    let bound = Duration::from_secs(args.duration);
    let mut ended_at = None;
    while rollout_start.elapsed() < bound {
        // A request without a device id gets the stable version while the rollout runs (checked below once a
        // later read of the rollout shows it still running).
        let anonymous = client
            .get(format!("{base}/model/{MODEL}/@{ALIAS}"))
            .bearer_auth(DEVICE_TOKEN)
            .header("if-none-match", format!("\"{}\"", fleet.digests[0]))
            .send()
            .await
            .map(|r| r.status().as_u16());
        let data = gql(&client, &base, ROLLOUT, json!({"id": id})).await?;
        let seen = Instant::now();
        let rollout = &data["rollout"];
        state = rollout["state"].as_str().unwrap_or("?").to_owned();
        if state == "RUNNING" || state == "PAUSED" {
            anonymous_asked += 1;
            anonymous_wrong += usize::from(anonymous.ok() != Some(304));
        }
        let at = rollout_start.elapsed().as_secs_f64();
        for class in rollout["classes"].as_array().into_iter().flatten() {
            let name = class["hardwareClass"].as_str().unwrap_or_default();
            let Some(t) = class_names.iter().position(|c| c == name) else {
                continue;
            };
            let w = &mut watch[t];
            let percent = class["percent"].as_u64().unwrap_or_default() as u32;
            let of_kind: Vec<usize> = (t..args.devices).step_by(4).collect();
            let on_new = of_kind
                .iter()
                .filter(|&&n| fleet.running[n].load(Ordering::Relaxed) == 1)
                .count();
            let state = class["state"].as_str().unwrap_or_default();
            if w.finished.is_none() && state == "ROLLING" {
                w.shares
                    .insert(percent, on_new as f64 / of_kind.len() as f64);
            }
            w.percent = percent;
            w.state = class["state"].as_str().unwrap_or_default().to_owned();
            w.reason = class["reason"].as_str().map(str::to_owned);
            w.figures = Some((class["candidate"].clone(), class["baseline"].clone()));
            if percent == 100 && w.at_full.is_none() {
                w.at_full = Some((at, seen));
            }
            if w.state != "ROLLING" && w.finished.is_none() {
                w.finished = Some((at, seen));
            }
        }
        if !(state == "RUNNING" || state == "PAUSED") {
            ended_at = Some(at);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Two more periods: every device asks at least twice after the outcome.
    tokio::time::sleep(period * 2).await;
    fleet.stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::with_capacity(args.devices);
    for task in tasks {
        logs.push(task.await?);
    }
    let (cpu_end, own_end) = (cpu::seconds(pid), cpu::own_seconds());
    let run_time = start.elapsed();
    let alias = gql(
        &client,
        &base,
        "query($name: String!, $alias: String!) { model(name: $name, alias: $alias) { version } }",
        json!({"name": MODEL, "alias": ALIAS}),
    )
    .await?;
    let peak_rss = rss.peak();
    drop(server);

    // The summary.
    let mut problems = Vec::new();
    println!(
        "fleet: {} devices, period {:.1} s ± {:.0} %, steps {:?} of {} s, gate errors <= {}, p99 ratio <= {}, \
         reports >= {}; all reported in {:.1} s",
        args.devices,
        args.period,
        fleet.jitter * 100.0,
        args.steps,
        args.step_seconds,
        args.max_error_rate,
        args.max_p99_ratio,
        args.min_reports,
        warm_up.as_secs_f64()
    );
    println!(
        "rollout {id}: {state}{} ; production -> {}",
        ended_at.map_or_else(
            || format!(" (not finished after {} s)", args.duration),
            |t| format!(" after {t:.1} s")
        ),
        alias["model"]["version"].as_str().unwrap_or("?")
    );
    println!(
        "\n{:<13} {:<28} {:>7} {:>9} {:>10} {:>10} {:>8} {:>8}  shares on {} at each step's last poll",
        "kind",
        "hardware class",
        "devices",
        "state",
        "100 % at",
        "done at",
        "on new",
        "wrong",
        VERSIONS[1]
    );
    for (t, kind) in fleet.templates.iter().enumerate() {
        let w = &watch[t];
        let of_kind: Vec<usize> = (t..args.devices).step_by(4).collect();
        let on_new = of_kind
            .iter()
            .filter(|&&n| fleet.running[n].load(Ordering::Relaxed) == 1)
            .count();
        // Answers after the simulator saw the class finish that left a device on the other version.
        let final_version = u8::from(w.state == "COMPLETED");
        let wrong: usize = w.finished.map_or(0, |(_, seen)| {
            of_kind
                .iter()
                .flat_map(|&n| &logs[n].answers)
                .filter(|(sent, version)| *sent >= seen && *version != final_version)
                .count()
        });
        // Answers that kept a device on the old version although its class had reached 100 % when they were sent.
        let stale: Vec<Duration> = w.at_full.map_or(Vec::new(), |(_, seen)| {
            of_kind
                .iter()
                .flat_map(|&n| &logs[n].answers)
                .filter(|(sent, version)| *sent >= seen && *version == 0)
                .map(|(sent, _)| *sent - seen)
                .collect()
        });
        if let Some(latest) = stale.iter().max() {
            problems.push(format!(
                "{} answers to {} devices gave {} after the class reached 100 % (sent up to {latest:?} after the \
                 simulator saw 100 %)",
                stale.len(),
                kind.label,
                VERSIONS[0]
            ));
        }
        let shares: Vec<String> = w
            .shares
            .iter()
            .map(|(p, s)| format!("{p}%:{:.1}%", s * 100.0))
            .collect();
        let secs = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:.1} s"));
        println!(
            "{:<13} {:<28} {:>7} {:>9} {:>10} {:>10} {:>8} {:>8}  {}",
            kind.label,
            class_names[t],
            of_kind.len(),
            w.state,
            secs(w.at_full.map(|(t, _)| t)),
            secs(w.finished.map(|(t, _)| t)),
            on_new,
            wrong,
            shares.join(" ")
        );
        if let Some(reason) = &w.reason {
            println!("{:<13} reason: {reason}", "");
        }
        if let Some((candidate, baseline)) = &w.figures
            && t == args.bad_class
        {
            println!("{:<13} figures: new {candidate}, old {baseline}", "");
        }
        let expected = if t == args.bad_class {
            "REVERTED"
        } else {
            "COMPLETED"
        };
        if w.state != expected {
            problems.push(format!(
                "{} ended {} instead of {expected}",
                kind.label, w.state
            ));
        }
        if wrong > 0 {
            problems.push(format!(
                "{wrong} answers to {} devices gave the wrong version after the class finished",
                kind.label
            ));
        }
        let expected_on_new = if expected == "COMPLETED" {
            of_kind.len()
        } else {
            0
        };
        if w.state == expected && on_new != expected_on_new {
            problems.push(format!(
                "{} of {} {} devices run {} at the end",
                on_new,
                of_kind.len(),
                kind.label,
                VERSIONS[1]
            ));
        }
    }
    if anonymous_wrong > 0 {
        problems.push(format!(
            "{anonymous_wrong} of {anonymous_asked} requests without a device id got the new version mid-rollout"
        ));
    }

    let mut resolve: Vec<f32> = logs
        .iter()
        .flat_map(|l| l.resolve_ms.iter().copied())
        .collect();
    let mut reports: Vec<f32> = logs
        .iter()
        .flat_map(|l| l.report_ms.iter().copied())
        .collect();
    resolve.sort_by(f32::total_cmp);
    reports.sort_by(f32::total_cmp);
    let failures: usize = logs.iter().map(|l| l.failures).sum();
    let downloads: usize = logs.iter().map(|l| l.downloads).sum();
    let late: usize = logs.iter().map(|l| l.late_wakes).sum();
    let requests = resolve.len() + reports.len() + failures;
    let line = |name: &str, sorted: &[f32]| {
        let at = |f| stats::percentile(sorted, f).unwrap_or(f32::NAN);
        println!(
            "{name:<8} {:>8} answered; from the scheduled wake: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            sorted.len(),
            at(0.5),
            at(0.99),
            sorted.last().copied().unwrap_or(f32::NAN)
        );
    };
    println!();
    line("reports", &reports);
    line("alias", &resolve);
    println!(
        "downloads {downloads}; failed requests {failures}{}; wakes late by > 10 % of a period {late}; \
         requests without a device id checked mid-rollout {anonymous_asked} (wrong {anonymous_wrong})",
        logs.iter()
            .find_map(|l| l.first_failure.as_ref())
            .map_or(String::new(), |f| format!(" (first: {f})"))
    );
    let server_cpu = cpu_end - cpu_start;
    println!(
        "server CPU {server_cpu:.1} s over {:.1} s ({:.1} s during the rollout and after), {:.0} us per request; \
         peak RSS {:.1} MiB; simulator CPU {:.1} s ({:.1} s during); {} cores",
        run_time.as_secs_f64(),
        cpu_end - cpu_rollout,
        server_cpu * 1e6 / requests.max(1) as f64,
        peak_rss as f64 / 1048576.0,
        own_end - own_start,
        own_end - own_rollout,
        cpu::cores()
    );
    if failures * 100 > requests {
        problems.push(format!("{failures} of {requests} requests failed"));
    }
    if problems.is_empty() {
        println!("\nok");
        Ok(())
    } else {
        for problem in &problems {
            println!("FAIL: {problem}");
        }
        std::process::exit(1)
    }
}
