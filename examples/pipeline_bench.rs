//! Resolving a whole pipeline over a large catalogue: fills the embedded store with N components (transformations,
//! services, inferencers and models, as `catalogue.rs` generates them), adds a 10-component pipeline (a model, six
//! preprocessing and one postprocessing transformation, a service and an inferencer, each with a file), then
//! resolves it for a device again and again in-process through the service, and a few times through
//! `POST /pipelines/resolve`.
//!
//! ```sh
//! cargo build --release --example pipeline_bench && target/release/examples/pipeline_bench --components 10000,100000
//! ```
//!
//! Prints, per catalogue size, p50/p99 of `resolve_pipeline` in-process (`--samples`, default 2000) and over HTTP
//! (`--http-samples`, default 200), and the machine's core count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use component_repository::domain::pipeline::{ModelRef, Pipeline};
use component_repository::domain::{
    Component, ComponentKey, Device, InferencerSpec, Kind, ModelSpec, Needs, ServiceSpec, Spec,
    TransformationSpec, now,
};
use component_repository::service::RepositoryService;
use component_repository::store::Store;
use component_repository::store::embedded::EmbeddedStore;
use serde_json::{Value, json};
use testkit::app::{TestApp, test_config};
use testkit::bench::stats::ms_at;
use testkit::data::Rng;

const BATCH: usize = 10_000;
const LIBRARIES: [&str; 10] = [
    "tensorflow",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "onnxruntime",
    "opencv-python",
    "transformers",
    "grpcio",
    "protobuf",
];
const REQUIREMENTS: [&str; 6] = ["2.13.0", ">=2.12,<3", ">=2.0", "~=1.26", "*", "==2.*"];

fn random_needs(rng: &mut Rng) -> Needs {
    let mut libraries = BTreeMap::new();
    for _ in 0..rng.below(4) {
        let name = LIBRARIES[rng.below(LIBRARIES.len() as u64) as usize];
        let requirement = REQUIREMENTS[rng.below(REQUIREMENTS.len() as u64) as usize];
        libraries.insert(name.to_string(), requirement.to_string());
    }
    Needs {
        storage: Some([0.1, 0.5, 1.0][rng.below(3) as usize]),
        ram: Some([0.5, 1.0, 2.0, 4.0][rng.below(4) as usize]),
        gpu: rng.below(5) == 0,
        gpu_memory: None,
        preinstalled_libraries: libraries,
        available_models: BTreeMap::new(),
    }
}

/// The i-th filler component: kinds in turn, so every kind's table is as large as the others.
fn filler(i: usize, rng: &mut Rng) -> anyhow::Result<Component> {
    let needs = random_needs(rng);
    let (key, spec) = match i % 4 {
        0 => (
            ComponentKey::model(format!("bench-model-{}", i / 40), format!("v{}", i % 40))?,
            Spec::Model(ModelSpec {
                library: "torch".into(),
                description: format!("Filler model {i}"),
            }),
        ),
        1 => (
            ComponentKey::with_id(Kind::Transformation, format!("bench.t_{i:07}"))?,
            Spec::Transformation(TransformationSpec {
                description: format!("Filler transformation {i}"),
                needs,
                ..TransformationSpec::default()
            }),
        ),
        2 => (
            ComponentKey::with_id(Kind::Service, format!("bench.svc_{i:07}"))?,
            Spec::Service(ServiceSpec {
                description: format!("Filler service {i}"),
                needs,
            }),
        ),
        _ => (
            ComponentKey::with_id(Kind::Inferencer, format!("bench.inf_{i:07}"))?,
            Spec::Inferencer(InferencerSpec {
                description: format!("Filler inferencer {i}"),
                library: "torch".into(),
                use_cuda: false,
                needs,
            }),
        ),
    };
    Ok(Component::new(key, spec, now())?)
}

fn part_needs(ram: f64, libraries: &[(&str, &str)]) -> Needs {
    Needs {
        ram: Some(ram),
        storage: Some(0.05),
        preinstalled_libraries: libraries
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..Needs::default()
    }
}

/// The pipeline's 10 components, created and given a file each through the service.
async fn add_pipeline(service: &RepositoryService) -> anyhow::Result<Pipeline> {
    let numpy = [("numpy", "1.23.5")];
    let mut parts: Vec<(ComponentKey, Spec)> = vec![(
        ComponentKey::model("pipeline-model", "v1")?,
        Spec::Model(ModelSpec {
            library: "tflite".into(),
            description: "The pipeline's model".into(),
        }),
    )];
    let mut pipeline = Pipeline {
        model: Some(ModelRef::Version {
            name: "pipeline-model".into(),
            version: "v1".into(),
        }),
        ..Pipeline::default()
    };
    for i in 0..7 {
        let id = format!("pipeline.step_{i}");
        parts.push((
            ComponentKey::with_id(Kind::Transformation, id.clone())?,
            Spec::Transformation(TransformationSpec {
                description: format!("Step {i}"),
                needs: part_needs(0.1, &numpy),
                ..TransformationSpec::default()
            }),
        ));
        if i < 6 {
            pipeline.preprocessing.push(id);
        } else {
            pipeline.postprocessing.push(id);
        }
    }
    parts.push((
        ComponentKey::with_id(Kind::Service, "pipeline.servicer")?,
        Spec::Service(ServiceSpec {
            description: "The servicer".into(),
            needs: part_needs(0.25, &[("grpcio", ">=1.60")]),
        }),
    ));
    pipeline.services.push("pipeline.servicer".into());
    parts.push((
        ComponentKey::with_id(Kind::Inferencer, "pipeline.inferencer")?,
        Spec::Inferencer(InferencerSpec {
            description: "The inferencer".into(),
            library: "tflite".into(),
            use_cuda: false,
            needs: part_needs(0.5, &[("tensorflow", ">=2.12,<2.13"), ("numpy", "1.23.5")]),
        }),
    ));
    pipeline.inferencer = Some("pipeline.inferencer".into());
    for (n, (key, spec)) in parts.into_iter().enumerate() {
        service.create(key.clone(), spec).await?;
        let bytes = testkit::bytes(4096, n as u64);
        let body = futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(axum::body::Bytes::from(bytes))
        });
        let staged = service.stage_upload(Box::pin(body)).await?;
        service
            .attach_file(
                &key,
                staged,
                Some("part.zip"),
                None,
                Default::default(),
                None,
            )
            .await?;
    }
    Ok(pipeline)
}

fn device() -> Device {
    component_repository::domain::parse_device(&json!({
        "ram": 4, "storage": 16,
        "libraries": [{"name": "numpy", "version": "1.23.5"}, {"name": "grpcio", "version": "1.60.0"},
                      {"name": "tensorflow", "version": "2.12.0"}],
        "platform": {"os": "linux", "arch": "arm64"}
    }))
    .expect("a valid device")
}

fn request_body() -> Value {
    let steps = |range: std::ops::Range<usize>| -> Vec<Value> {
        range
            .map(|i| json!({ "id": format!("pipeline.step_{i}"), "parameters": {} }))
            .collect()
    };
    json!({
        "setup": {"service": {"servicer": "pipeline.servicer"}, "inference": {"inferencer": "pipeline.inferencer"}},
        "model": {"model_name": "pipeline-model", "model_version": "v1", "library": "tflite"},
        "preprocessing": steps(0..6),
        "postprocessing": steps(6..7),
        "device": {"ram": 4, "storage": 16,
                   "libraries": [{"name": "numpy", "version": "1.23.5"}, {"name": "grpcio", "version": "1.60.0"},
                                 {"name": "tensorflow", "version": "2.12.0"}],
                   "platform": {"os": "linux", "arch": "arm64"}},
    })
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn measure(components: usize, samples: usize, http_samples: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = Arc::new(EmbeddedStore::open(&data).await?);
    let filled = Instant::now();
    let mut rng = Rng(0x5EED);
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..components.saturating_sub(10) {
        batch.push(filler(i, &mut rng)?);
        if batch.len() == BATCH {
            store.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.insert_many(batch).await?;
    }
    let fill_time = filled.elapsed();
    let service = RepositoryService::new(store.clone() as Arc<dyn Store>, 1 << 30);
    let pipeline = add_pipeline(&service).await?;
    let device = device();
    let check = service.resolve_pipeline(&pipeline, &device).await?;
    ensure!(
        check.fits && check.components.len() == 10,
        "the benchmark's pipeline must fit: {:?}",
        check.problems
    );
    // Warm the store's caches as a running server has them.
    for _ in 0..50 {
        service.resolve_pipeline(&pipeline, &device).await?;
    }
    let mut in_process = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let resolution = service.resolve_pipeline(&pipeline, &device).await?;
        in_process.push(started.elapsed());
        std::hint::black_box(resolution);
    }
    in_process.sort();

    let app = TestApp::start(store, dir, Some(data), test_config()).await;
    let body = request_body();
    let mut over_http: Vec<Duration> = Vec::with_capacity(http_samples);
    for i in 0..http_samples + 20 {
        let started = Instant::now();
        let response = app
            .client
            .post(app.url("/pipelines/resolve"))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        let elapsed = started.elapsed();
        ensure!(
            status == 200 && answer["fits"] == true,
            "{status}: {answer}"
        );
        if i >= 20 {
            over_http.push(elapsed);
        }
    }
    over_http.sort();
    println!(
        "{components:>7} components (filled in {:.1} s): resolve_pipeline in-process p50 {:.3} ms p99 {:.3} ms \
         ({samples} runs); POST /pipelines/resolve p50 {:.3} ms p99 {:.3} ms ({http_samples} requests)",
        fill_time.as_secs_f64(),
        ms_at(&in_process, 0.5),
        ms_at(&in_process, 0.99),
        ms_at(&over_http, 0.5),
        ms_at(&over_http, 0.99),
    );
    app.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes: String = arg(&args, "--components", "10000,100000".to_string());
    let samples = arg(&args, "--samples", 2000usize);
    let http_samples = arg(&args, "--http-samples", 200usize);
    println!(
        "pipeline_bench: a 10-component pipeline, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for size in sizes.split(',') {
        let size: usize = size
            .trim()
            .parse()
            .context("--components: numbers, comma-separated")?;
        measure(size, samples, http_samples).await?;
    }
    Ok(())
}
