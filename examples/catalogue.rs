//! The catalogue at scale: fills the embedded store with N services (and 10,000 transformations), starts the
//! server on it and measures, through HTTP, listings, filters, `runnableOn`, counts, lookups, cold start, memory
//! and writes.
//!
//! ```sh
//! cargo build --release --bins --examples && target/release/examples/catalogue --components 100000
//! ```
//!
//! Prints each figure with p50/p99 (or the median of a few runs for whole lists) and the machine's core count.
//! `--components` (default 10000) is the number of services, `--transformations` (default 10000) the number of
//! transformations; `--samples` (default 200) the requests per figure. `--only-writes URL` measures only the writes
//! (`--samples` creates of each kind) against a server already running at URL, e.g. another build of it.
//! `--data-dir DIR` keeps the store in DIR and, when DIR already holds one, measures it as it is instead of filling
//! a new one (a million components take minutes to fill); its counts are then read from the store.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use testkit::bench::rss;
use testkit::process;

use anyhow::{Context, bail, ensure};
use component_repository::domain::{
    Component, ComponentKey, Needs, ServiceSpec, Spec, TransformationSpec,
};
use component_repository::store::Store;
use component_repository::store::embedded::EmbeddedStore;
use serde_json::{Value, json};
use testkit::data::Rng;

const BATCH: usize = 10_000;
const LIBRARIES: [&str; 20] = [
    "tensorflow",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "onnxruntime",
    "opencv-python",
    "transformers",
    "keras",
    "xgboost",
    "lightgbm",
    "jax",
    "pillow",
    "grpcio",
    "protobuf",
    "fastapi",
    "pyarrow",
    "tflite-runtime",
    "openvino",
];
const REQUIREMENTS: [&str; 8] = [
    "2.13.0",
    ">=2.12,<3",
    ">=2.0",
    "~=1.26",
    "1.26.4",
    "*",
    "==2.*",
    ">=4.8",
];

fn needs(rng: &mut Rng) -> Needs {
    let mut libraries = BTreeMap::new();
    // Most components need one or two of the usual libraries; a quarter need none.
    for _ in 0..rng.below(4) {
        let name =
            LIBRARIES[(rng.below(8) * rng.below(3) + rng.below(3)) as usize % LIBRARIES.len()];
        let requirement = REQUIREMENTS[rng.below(REQUIREMENTS.len() as u64) as usize];
        libraries.insert(name.to_string(), requirement.to_string());
    }
    let mut models = BTreeMap::new();
    if rng.below(4) == 0 {
        models.insert(
            format!("model-{}", rng.below(100)),
            format!("v{}", rng.below(3)),
        );
    }
    Needs {
        storage: Some([0.1, 0.5, 1.0, 4.0][rng.below(4) as usize]),
        ram: Some([0.5, 1.0, 2.0, 4.0, 8.0, 16.0][rng.below(6) as usize]),
        gpu: rng.below(5) == 0,
        gpu_memory: None,
        preinstalled_libraries: libraries,
        available_models: models,
    }
}

fn service(i: usize, rng: &mut Rng) -> anyhow::Result<Component> {
    let key = ComponentKey::with_id(
        component_repository::domain::Kind::Service,
        format!("bench.services.svc_{i:07}"),
    )?;
    let spec = Spec::Service(ServiceSpec {
        description: format!("Benchmark service number {i}"),
        needs: needs(rng),
    });
    Ok(Component::new(
        key,
        spec,
        component_repository::domain::now(),
    )?)
}

fn transformation(i: usize, rng: &mut Rng) -> anyhow::Result<Component> {
    let key = ComponentKey::with_id(
        component_repository::domain::Kind::Transformation,
        format!("bench.transformations.t_{i:06}"),
    )?;
    let spec = Spec::Transformation(TransformationSpec {
        description: format!("Benchmark transformation number {i}"),
        parameter_types: [("window".to_string(), "int".to_string())].into(),
        default_values: json!({ "window": 16 })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        outputs: vec!["frames".into()],
        needs: needs(rng),
    });
    Ok(Component::new(
        key,
        spec,
        component_repository::domain::now(),
    )?)
}

/// How many services and transformations a store left by an earlier run holds.
async fn stored(data_dir: &std::path::Path) -> anyhow::Result<(usize, usize)> {
    use component_repository::domain::{ComponentFilter, Kind};
    use component_repository::store::PageRequest;
    let store = EmbeddedStore::open(data_dir).await?;
    let mut counts = Vec::new();
    for kind in [Kind::Service, Kind::Transformation] {
        let page = PageRequest {
            after: None,
            limit: 0,
            count: true,
        };
        let page = store
            .components()
            .list(kind, &ComponentFilter::default(), page)
            .await?;
        counts.push(page.total.context("the store did not count")? as usize);
    }
    Ok((counts[0], counts[1]))
}

/// Fills the store through the store API, in transactions of `BATCH` components.
async fn fill(
    data_dir: &std::path::Path,
    services: usize,
    transformations: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let store = EmbeddedStore::open(data_dir).await?;
    let mut rng = Rng(0x5EED);
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..transformations {
        batch.push(transformation(i, &mut rng)?);
        if batch.len() == BATCH {
            store.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    for i in 0..services {
        batch.push(service(i, &mut rng)?);
        if batch.len() == BATCH {
            store.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.insert_many(batch).await?;
    }
    // The store is handed over to the server: wait until its background work is done.
    while store.ping().await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(store);
    Ok(started.elapsed())
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn graphql(client: &reqwest::Client, base: &str, query: &str) -> anyhow::Result<Value> {
    let answer: Value = client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await?
        .json()
        .await?;
    if answer.get("errors").is_some() {
        bail!("{query}: {answer}");
    }
    Ok(answer)
}

/// Runs `query` `samples` times (after a few warm-ups) and returns the latencies and the last answer.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    samples: usize,
    query: impl Fn(usize) -> String,
) -> anyhow::Result<(Stats, Value)> {
    for i in 0..samples.min(10) {
        graphql(client, base, &query(i)).await?;
    }
    let mut latencies = Vec::with_capacity(samples);
    let mut last = Value::Null;
    for i in 0..samples {
        let started = Instant::now();
        last = graphql(client, base, &query(i)).await?;
        latencies.push(started.elapsed());
    }
    Ok((stats(latencies), last))
}

fn row(workload: &str, figure: impl std::fmt::Display) {
    println!("| {workload} | {figure} |");
}

fn p50_p99(s: &Stats) -> String {
    format!("{} p50, {} p99", ms(s.p50), ms(s.p99))
}

/// Fetches a whole REST list `runs` times; returns the latency stats, the item count and the server's peak RSS
/// above what it was before.
async fn whole_list(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    runs: usize,
    sampler: &rss::RssSampler,
) -> anyhow::Result<(Stats, usize, u64)> {
    let mut latencies = Vec::new();
    let mut count = 0;
    sampler.reset();
    let idle = sampler.peak();
    for _ in 0..runs {
        let started = Instant::now();
        let body = client
            .get(format!("{base}{path}"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        latencies.push(started.elapsed());
        let items: Vec<Value> = serde_json::from_slice(&body)?;
        count = items.len();
    }
    let above = sampler.peak().saturating_sub(idle);
    Ok((stats(latencies), count, above))
}

async fn wait_until(
    client: &reqwest::Client,
    url: &str,
    deadline: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return Ok(started.elapsed());
        }
        ensure!(started.elapsed() < deadline, "{url} did not answer in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Writes: REST creates one at a time, then GraphQL batches of 100 creates; ids start with `prefix`.
async fn writes(
    client: &reqwest::Client,
    base: &str,
    creates: usize,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    let started = Instant::now();
    for i in 0..creates {
        let id = format!("{prefix}.rest.svc_{i:05}");
        client
            .post(format!("{base}/service"))
            .json(&json!({ "id": id, "description": "created over REST" }))
            .send()
            .await?
            .error_for_status()?;
        created.push(id);
    }
    let rest_rate = creates as f64 / started.elapsed().as_secs_f64();
    row(
        "REST creates, one at a time",
        format!("{rest_rate:.0}/s ({creates} creates)"),
    );
    let batches = (creates / 100).max(1);
    let started = Instant::now();
    for b in 0..batches {
        // A GraphQL batch: a JSON array of 100 operations in one request.
        let operations: Vec<Value> = (0..100)
            .map(|i| {
                json!({ "query": format!(
                    "mutation {{ createService(input: {{id: \"{prefix}.gql.svc_{b:03}_{i:03}\", needs: {{ram: 1}}}}) {{ id }} }}"
                ) })
            })
            .collect();
        let answers: Vec<Value> = client
            .post(format!("{base}/graphql"))
            .json(&operations)
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            answers.len() == 100 && answers.iter().all(|a| a.get("errors").is_none()),
            "a batch of creates failed: {answers:?}"
        );
        created.extend((0..100).map(|i| format!("{prefix}.gql.svc_{b:03}_{i:03}")));
    }
    let gql_rate = (batches * 100) as f64 / started.elapsed().as_secs_f64();
    row(
        "GraphQL creates in batches of 100",
        format!("{gql_rate:.0}/s ({} creates)", batches * 100),
    );
    Ok(created)
}

/// Deletes what [`writes`] created, so that a kept store stays as it was filled.
async fn remove(client: &reqwest::Client, base: &str, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        client
            .delete(format!("{base}/service/{id}"))
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut services = 10_000usize;
    let mut samples = 200usize;
    let mut transformations = 10_000usize;
    let mut writes_to = None::<String>;
    let mut keep = None::<std::path::PathBuf>;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--components" => services = args.next().context("--components N")?.parse()?,
            "--samples" => samples = args.next().context("--samples N")?.parse()?,
            "--transformations" => {
                transformations = args.next().context("--transformations N")?.parse()?
            }
            "--only-writes" => writes_to = Some(args.next().context("--only-writes URL")?),
            "--data-dir" => keep = Some(args.next().context("--data-dir DIR")?.into()),
            other => bail!(
                "unknown argument {other}; takes --components N, --transformations N, --samples N, \
                 --only-writes URL, --data-dir DIR"
            ),
        }
    }
    // Ids of this run's creates: a kept store may hold those of earlier runs.
    let run = format!(
        "w{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    if let Some(base) = writes_to {
        // Against a server already running (another build, for one): the writes only.
        println!("| workload | measured against {base} |");
        println!("| --- | --- |");
        return writes(&reqwest::Client::new(), &base, samples, &run)
            .await
            .map(drop);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir_in(".")?;
    let kept = keep.is_some();
    let data_dir = keep.unwrap_or_else(|| dir.path().join("data"));
    if data_dir.join("metadata.redb").exists() {
        (services, transformations) = stored(&data_dir).await?;
        println!(
            "catalogue benchmark: {services} services + {transformations} transformations, {cores} cores, \
             the store kept in {}",
            data_dir.display()
        );
    } else {
        let filled = fill(&data_dir, services, transformations).await?;
        println!(
            "catalogue benchmark: {services} services + {transformations} transformations, {cores} cores, \
             filled through the store API in {:.1} s",
            filled.as_secs_f64()
        );
    }
    println!();
    println!("| workload | measured |");
    println!("| --- | --- |");

    // Cold start: the process starts, answers /healthz, and /readyz once the catalogue is loaded.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let server = process::ServerProcess::start(&data_dir, &[]);
    let base = server.base.clone();
    let listening = started.elapsed();
    let healthy = wait_until(&client, &format!("{base}/healthz"), Duration::from_secs(5)).await?;
    let ready = wait_until(&client, &format!("{base}/readyz"), Duration::from_secs(120)).await?;
    let loaded = server
        .log
        .lock()
        .ok()
        .and_then(|log| {
            let line = log
                .lines()
                .find(|l| l.contains("catalogue loaded"))?
                .to_owned();
            let value = line
                .split("elapsed_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_owned();
            Some(value)
        })
        .unwrap_or_else(|| "?".into());
    row(
        &format!("cold start with {services} services"),
        format!(
            "listening after {}, /healthz {}, /readyz after {} (from process start; the load itself {loaded} ms)",
            ms(listening),
            ms(listening + healthy),
            ms(listening + ready)
        ),
    );
    let pid = server.child.id();
    let sampler = rss::RssSampler::start(pid);
    let idle_rss = rss::rss_bytes(pid).unwrap_or(0);
    row(
        &format!("RSS with {services} services, idle after start"),
        format!("{:.0} MiB", idle_rss as f64 / 1024.0 / 1024.0),
    );

    let (list, count, above) = whole_list(&client, &base, "/transformation", 7, &sampler).await?;
    ensure!(
        count == transformations,
        "GET /transformation returned {count} items"
    );
    row(
        &format!("`GET /transformation`, {transformations} items (7 runs)"),
        format!(
            "{} p50, {} max; peak RSS +{:.1} MiB",
            ms(list.p50),
            ms(list.p99),
            above as f64 / 1024.0 / 1024.0
        ),
    );
    if services <= 100_000 {
        let (list, count, above) = whole_list(&client, &base, "/service", 3, &sampler).await?;
        ensure!(count == services, "GET /service returned {count} items");
        row(
            &format!("`GET /service`, {services} items (3 runs)"),
            format!(
                "{} p50, {} max; peak RSS +{:.1} MiB",
                ms(list.p50),
                ms(list.p99),
                above as f64 / 1024.0 / 1024.0
            ),
        );
    }

    let filter =
        r#"needs: {maxRam: 4, gpu: false, libraries: [{name: "tensorflow", version: ">=2.12"}]}"#;
    for (kind, total) in [("transformations", transformations), ("services", services)] {
        let (s, answer) = measure(&client, &base, samples, |_| {
            format!("{{ {kind}(filter: {{{filter}}}, first: 20) {{ edges {{ node {{ id }} }} }} }}")
        })
        .await?;
        ensure!(
            answer["data"][kind]["edges"]
                .as_array()
                .is_some_and(|e| !e.is_empty()),
            "the filtered page is empty"
        );
        row(
            &format!("filtered `{kind}` page over {total}, `first: 20`"),
            p50_p99(&s),
        );
        let (s, answer) = measure(&client, &base, samples, |_| {
            format!(
                "{{ {kind}(filter: {{{filter}}}, first: 20) {{ totalCount edges {{ node {{ id }} }} }} }}"
            )
        })
        .await?;
        row(
            &format!(
                "the same with `totalCount` ({})",
                answer["data"][kind]["totalCount"]
            ),
            p50_p99(&s),
        );
    }

    let device = r#"{gpu: false, ram: 8, storage: 16, libraries: [{name: "tensorflow", version: "2.13.1"}, {name: "numpy", version: "1.26.4"}, {name: "scipy", version: "1.11.0"}], models: [{name: "model-1", version: "v0"}]}"#;
    let (s, answer) = measure(&client, &base, samples, |_| {
        format!(
            "{{ runnableOn(device: {device}, kinds: [SERVICE], first: 20) {{ edges {{ node {{ ... on Service {{ id }} }} }} }} }}"
        )
    })
    .await?;
    ensure!(
        answer["data"]["runnableOn"]["edges"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "runnableOn found nothing"
    );
    row(
        &format!("`runnableOn` over {services} services, `first: 20`"),
        p50_p99(&s),
    );
    let (s, answer) = measure(&client, &base, samples, |_| {
        format!("{{ runnableOn(device: {device}, kinds: [SERVICE], first: 20) {{ totalCount edges {{ node {{ ... on Service {{ id }} }} }} }} }}")
    })
    .await?;
    row(
        &format!(
            "the same with `totalCount` ({})",
            answer["data"]["runnableOn"]["totalCount"]
        ),
        p50_p99(&s),
    );
    let (s, answer) = measure(&client, &base, samples, |_| {
        "{ services(first: 20) { totalCount edges { node { id } } } }".to_string()
    })
    .await?;
    ensure!(
        answer["data"]["services"]["totalCount"] == json!(services),
        "totalCount is not {services}: {answer}"
    );
    row(
        &format!("unfiltered `services` page with `totalCount` over {services}"),
        p50_p99(&s),
    );
    let mut rng = Rng(7);
    let ids: Vec<usize> = (0..samples.max(10))
        .map(|_| rng.below(services as u64) as usize)
        .collect();
    let (s, answer) = measure(&client, &base, samples, |i| {
        format!(
            "{{ service(id: \"bench.services.svc_{:07}\") {{ id needs {{ ram }} }} }}",
            ids[i % ids.len()]
        )
    })
    .await?;
    ensure!(
        answer["data"]["service"]["id"].is_string(),
        "service(id) found nothing"
    );
    row(
        &format!("`service(id)` with {services} stored"),
        p50_p99(&s),
    );

    let created = writes(&client, &base, samples.clamp(20, 500), &run).await?;
    let peak = sampler.peak().max(rss::rss_bytes(pid).unwrap_or(0));
    row(
        &format!("peak RSS over the run with {services} services"),
        format!("{:.0} MiB", peak as f64 / 1024.0 / 1024.0),
    );
    if kept {
        remove(&client, &base, &created).await?;
    }
    Ok(())
}
