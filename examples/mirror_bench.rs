//! Edge mirrors: time to mirror from empty, bytes fetched again after a cut mid-file, and the lag from an
//! upstream commit to the file being served at the site.
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/mirror_bench [COMPONENTS] [TOTAL] [CUT_FILE] [LAG_SAMPLES]
//! ```
//!
//! Defaults: 1000 components sharing 2GiB of files, a 1GiB file cut at 50 %, 100 lag samples. Starts an upstream
//! and mirrors as processes on loopback (the cut through the tests' fault proxy), prints the figures, and stops.
//! Needs about twice TOTAL plus twice CUT_FILE of free disk.

use std::time::{Duration, Instant};
use testkit::bench::stats;
use testkit::chaos;
use testkit::data as random;
use testkit::process;

use serde_json::{Value, json};

fn percentile(sorted: &[f64], percent: f64) -> f64 {
    stats::percentile(sorted, percent / 100.0).unwrap_or(f64::NAN)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        testkit::graphql::query(&self.http, &self.base, query, variables).await
    }

    async fn service(&self, id: &str, file: Option<Vec<u8>>) -> anyhow::Result<()> {
        self.gql(
            "mutation($id: ID!) { createService(input: {id: $id, needs: {ram: 1}}) { id } }",
            json!({ "id": id }),
        )
        .await?;
        if let Some(bytes) = file {
            let form = testkit::graphql::upload_form(
                "mutation($file: Upload!, $id: ID!) { uploadServiceFile(id: $id, file: $file) { id } }",
                json!({ "id": id }),
                bytes,
                "f.bin",
            );
            let response = testkit::graphql::post_upload(&self.http, &self.base, form)
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "upload: {}", response.status());
        }
        Ok(())
    }

    async fn following(&self) -> bool {
        self.gql("{ mirror { state pendingFiles } }", json!({}))
            .await
            .is_ok_and(|d| d["mirror"]["state"] == "FOLLOWING")
    }
}

async fn wait(
    what: &str,
    limit: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done().await {
        anyhow::ensure!(start.elapsed() < limit, "{what}: not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn size_arg(text: Option<&String>, default: u64) -> anyhow::Result<u64> {
    match text {
        None => Ok(default),
        Some(t) => Ok(t
            .parse::<bytesize::ByteSize>()
            .map_err(anyhow::Error::msg)?
            .as_u64()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let components: usize = args.first().map_or(Ok(1000), |s| s.parse())?;
    let total = size_arg(args.get(1), 2 << 30)?;
    let cut_file = size_arg(args.get(2), 1 << 30)? as usize;
    let samples: usize = args.get(3).map_or(Ok(100), |s| s.parse())?;
    let limit = Duration::from_secs(3600);
    let http = reqwest::Client::new();

    let dir = tempfile::tempdir()?;
    let upstream = process::ServerProcess::start(&dir.path().join("upstream"), &[]);
    let up = Client {
        http: http.clone(),
        base: upstream.base.clone(),
    };
    let each = (total / components.max(1) as u64) as usize;
    for i in 0..components {
        up.service(
            &format!("svc-{i:05}"),
            Some(random::bytes(each, i as u64 + 1)),
        )
        .await?;
    }
    let device = dir.path().join("device.json");
    std::fs::write(&device, json!({ "ram": 8 }).to_string())?;
    let device = device.display().to_string();

    // 1. From empty.
    let started = Instant::now();
    let site = process::ServerProcess::start(
        &dir.path().join("site"),
        &[
            "--mirror-upstream",
            &upstream.base,
            "--mirror-device",
            &device,
        ],
    );
    let site_client = Client {
        http: http.clone(),
        base: site.base.clone(),
    };
    wait("the first sync", limit, async || {
        site_client.following().await
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "from empty: {components} components, {:.1} MiB in {took:.2} s ({:.1} MiB/s, {:.0} components/s)",
        (each * components) as f64 / 1048576.0,
        (each * components) as f64 / 1048576.0 / took,
        components as f64 / took
    );

    // 3. Lag from a commit upstream to the file served at the site.
    let mut lags = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("lag-{i:05}");
        up.service(&id, Some(random::bytes(10_000, 1_000_000 + i as u64)))
            .await?;
        let committed = Instant::now();
        let url = format!("{}/service/{id}", site.base);
        wait("a lag sample", Duration::from_secs(120), async || {
            http.get(&url).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await?;
        lags.push(committed.elapsed().as_secs_f64() * 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "lag commit -> served at the site: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({samples} samples)",
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags.last().copied().unwrap_or(f64::NAN)
    );
    drop(site);

    // 2. A cut at 50 % of one big file, through the fault proxy.
    up.service("big", Some(random::bytes(cut_file, 7))).await?;
    let target = upstream.base.trim_start_matches("http://").parse()?;
    let proxy = chaos::ChaosProxy::start(target).await;
    proxy.set(chaos::Fault::CutAfter(cut_file as u64 / 2));
    let started = Instant::now();
    let cut_site = process::ServerProcess::start(
        &dir.path().join("cut"),
        &[
            "--mirror-upstream",
            &proxy.url(),
            "--mirror-include",
            "service:big",
        ],
    );
    wait("the cut", limit, async || {
        proxy.downstream_bytes() >= cut_file as u64 / 2
    })
    .await?;
    proxy.set(chaos::Fault::None);
    let url = format!("{}/service/big", cut_site.base);
    wait("the resumed file", limit, async || {
        http.head(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await?;
    let carried = proxy.downstream_bytes();
    println!(
        "cut at 50 % of a {:.0} MiB file: {} bytes through the link in all, {} more than the file \
         (GraphQL answers included), done in {:.2} s",
        cut_file as f64 / 1048576.0,
        carried,
        carried.saturating_sub(cut_file as u64),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
