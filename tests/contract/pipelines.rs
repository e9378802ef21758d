//! Whole pipelines on the inference server's real configurations (`tests/data/inference-server`): sent as they are
//! to `POST /pipelines/resolve`, and as GraphQL's `resolvePipeline`, they resolve to exactly the files the inference
//! server fetches on a device that has what they need, and fail with named problems where it does not.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use testkit::inference_server::{self, UseCase};

use super::Starter;
use crate::common::{TestApp, sha256_hex, test_config};

/// The libraries the inference server's `requirements.txt` pins, which its parts need.
fn server_libraries() -> Vec<Value> {
    vec![
        json!({"name": "tensorflow", "version": "2.12.0"}),
        json!({"name": "numpy", "version": "1.23.5"}),
        json!({"name": "grpcio", "version": "1.60.0"}),
        json!({"name": "protobuf", "version": "4.22.3"}),
    ]
}

/// A CPU box with enough for the fall detector.
fn edge_box() -> Value {
    json!({ "ram": 2, "storage": 8, "libraries": server_libraries(),
            "platform": {"os": "linux", "arch": "arm64"} })
}

/// A GPU server with enough for the scratch detector.
fn gpu_server() -> Value {
    let mut libraries = server_libraries();
    libraries.push(json!({"name": "torch", "version": "2.4.1"}));
    libraries.push(json!({"name": "torchvision", "version": "0.19.1"}));
    json!({ "gpu": true, "gpuMemory": 8, "ram": 8, "storage": 8, "libraries": libraries,
            "platform": {"os": "linux", "arch": "amd64"} })
}

/// `POST /pipelines/resolve` with `body`: the status and the JSON answer.
async fn post(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/pipelines/resolve"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The REST resolution of `use_case` on `device`, which must be a 200.
async fn rest(app: &TestApp, use_case: &UseCase, device: &Value) -> Value {
    let (status, body) = post(app, &use_case.request(device)).await;
    assert_eq!(status, 200, "{body:#}");
    body
}

const RESOLUTION: &str = "fits lock
    components { role kind key file { sha256 size filename downloadUrl
        platform { os arch variant accelerator acceleratorVersion precision } needs { storage ram gpuMemory gpu } } }
    totals { ram gpuMemory storage gpu downloadBytes }
    problems { role component code message }";

/// `resolvePipeline` for `pipeline` (a `PipelineInput`) on `device`, every field selected.
async fn graphql(app: &TestApp, pipeline: &Value, device: &Value) -> Value {
    let query = format!(
        "query($device: DeviceInput!, $pipeline: PipelineInput!) {{ resolvePipeline(device: $device, pipeline: $pipeline) {{ {RESOLUTION} }} }}"
    );
    app.ok(&query, json!({ "device": device, "pipeline": pipeline }))
        .await["resolvePipeline"]
        .clone()
}

/// The REST answer for the files as they are, checked equal to GraphQL's for the same configuration.
async fn resolve_both(app: &TestApp, use_case: &UseCase, device: &Value) -> Value {
    let rest = rest(app, use_case, device).await;
    let graphql = graphql(app, &use_case.pipeline_input(), device).await;
    assert_eq!(rest, graphql, "REST and GraphQL answer alike");
    rest
}

fn codes(resolution: &Value) -> BTreeSet<String> {
    resolution["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_string())
        .collect()
}

/// The problem of `code`, which must be there.
fn problem<'a>(resolution: &'a Value, code: &str) -> &'a Value {
    resolution["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == code)
        .unwrap_or_else(|| panic!("no {code}: {resolution:#}"))
}

/// The sha256 each component's file has in the test data, by key.
fn data_digests() -> BTreeMap<String, String> {
    inference_server::components()
        .iter()
        .map(|c| {
            (
                inference_server::key_of(c),
                sha256_hex(&inference_server::file_of(c)),
            )
        })
        .collect()
}

pub async fn inference_server_use_cases_resolve_to_the_files_it_fetches(start: Starter) {
    let app = start(test_config()).await;
    let digests = data_digests();
    for (name, device) in [
        ("fall_detection", edge_box()),
        ("scratch_detection", gpu_server()),
    ] {
        let use_case = app.load_inference_server_use_case(name).await;
        let resolution = resolve_both(&app, &use_case, &device).await;
        assert_eq!(resolution["fits"], true, "{name}: {resolution:#}");
        assert_eq!(resolution["problems"], json!([]), "{name}");
        // Exactly the parts the inference server fetches, in its order, each with the file it would get.
        let components = resolution["components"].as_array().unwrap();
        let keys: Vec<&str> = components
            .iter()
            .map(|c| c["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, use_case.fetched(), "{name}");
        let mut distinct = BTreeSet::new();
        let (mut ram, mut bytes) = (0.0, 0);
        for component in components {
            let key = component["key"].as_str().unwrap();
            let file = &component["file"];
            assert_eq!(file["sha256"], digests[key], "{name}: {key}");
            // The link serves those bytes, and so does the route the inference server calls.
            let (status, served) = app.download(file["downloadUrl"].as_str().unwrap()).await;
            assert_eq!((status, sha256_hex(&served)), (200, digests[key].clone()));
            let route = match key.split(' ').collect::<Vec<_>>().as_slice() {
                ["model", name, "version", version] => format!("/model/{name}/{version}"),
                [kind, id] => format!("/{kind}/{id}"),
                other => panic!("{other:?}"),
            };
            let (status, served) = app.download(&route).await;
            assert_eq!((status, sha256_hex(&served)), (200, digests[key].clone()));
            if distinct.insert(key) {
                let needs = &inference_server::component(key)["needs"];
                ram += needs["ram"].as_f64().unwrap_or(0.0);
                bytes += file["size"].as_u64().unwrap();
            }
        }
        // Parts share one process: their RAM adds up, each distinct file is downloaded once.
        let totals = &resolution["totals"];
        assert!(
            (totals["ram"].as_f64().unwrap() - ram).abs() < 1e-9,
            "{name}: {totals}"
        );
        assert_eq!(totals["downloadBytes"], bytes, "{name}");
        assert_eq!(totals["gpu"], name == "scratch_detection", "{name}");
    }
}

pub async fn inference_server_use_cases_fail_on_unfit_devices_with_named_problems(start: Starter) {
    let app = start(test_config()).await;
    let fall = app.load_inference_server_use_case("fall_detection").await;
    let scratch = app
        .load_inference_server_use_case("scratch_detection")
        .await;
    let inferencer = |use_case: &UseCase| {
        format!(
            "inferencer {}",
            use_case.setup["inference"]["inferencer"].as_str().unwrap()
        )
    };

    // Too little RAM for all parts together, though each part alone fits.
    let mut small = edge_box();
    small["ram"] = json!(1);
    let resolution = resolve_both(&app, &fall, &small).await;
    assert_eq!(resolution["fits"], false);
    assert_eq!(codes(&resolution), BTreeSet::from(["RAM_EXCEEDED".into()]));
    let sum = problem(&resolution, "RAM_EXCEEDED");
    assert_eq!(
        (&sum["role"], &sum["component"]),
        (&Value::Null, &Value::Null),
        "a problem of the pipeline as a whole: {sum}"
    );
    assert!(
        sum["message"].as_str().unwrap().contains("together"),
        "{sum}"
    );

    // No GPU for the torch detector; too little GPU memory.
    let mut cpu_only = gpu_server();
    cpu_only["gpu"] = json!(false);
    cpu_only.as_object_mut().unwrap().remove("gpuMemory");
    let resolution = resolve_both(&app, &scratch, &cpu_only).await;
    assert_eq!(codes(&resolution), BTreeSet::from(["GPU_REQUIRED".into()]));
    let gpu = problem(&resolution, "GPU_REQUIRED");
    assert_eq!(
        (gpu["role"].as_str(), gpu["component"].as_str()),
        (Some("INFERENCER"), Some(inferencer(&scratch).as_str()))
    );
    let mut small_gpu = gpu_server();
    small_gpu["gpuMemory"] = json!(2);
    let resolution = resolve_both(&app, &scratch, &small_gpu).await;
    assert_eq!(
        codes(&resolution),
        BTreeSet::from(["GPU_MEMORY_EXCEEDED".into()])
    );

    // A library in a version the parts refuse: every part that needs it says so.
    let mut newer_tensorflow = edge_box();
    newer_tensorflow["libraries"][0]["version"] = json!("2.13.0");
    let resolution = resolve_both(&app, &fall, &newer_tensorflow).await;
    assert_eq!(
        codes(&resolution),
        BTreeSet::from(["LIBRARY_VERSION".into()])
    );
    let refusing: BTreeSet<&str> = resolution["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        refusing,
        BTreeSet::from([
            "transformation custom.preprocess_tensorflow_tensor",
            "transformation custom.postprocess_tensorflow_tensor",
            inferencer(&fall).as_str(),
        ])
    );
    // A library the device lacks.
    let mut without_grpc = edge_box();
    without_grpc["libraries"]
        .as_array_mut()
        .unwrap()
        .retain(|l| l["name"] != "grpcio");
    let resolution = resolve_both(&app, &fall, &without_grpc).await;
    assert_eq!(
        codes(&resolution),
        BTreeSet::from(["LIBRARY_MISSING".into()])
    );
    let missing = problem(&resolution, "LIBRARY_MISSING");
    assert_eq!(
        (missing["role"].as_str(), missing["component"].as_str()),
        (Some("SERVICE"), Some("service extended-inf-svc"))
    );
    assert!(missing["message"].as_str().unwrap().contains("grpcio"));
    // Whatever the problems, each part that has a file still says which it would be.
    assert!(
        resolution["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["file"]["sha256"].is_string())
    );
}

pub async fn a_deleted_model_version_is_a_missing_model_version(start: Starter) {
    let app = start(test_config()).await;
    let fall = app.load_inference_server_use_case("fall_detection").await;
    let (name, version) = (
        fall.model["model_name"].as_str().unwrap().to_string(),
        fall.model["model_version"].as_str().unwrap().to_string(),
    );
    let fits = resolve_both(&app, &fall, &edge_box()).await;
    assert_eq!(fits["fits"], true);
    // `model_alias` in model.json stands for the version, resolved to it: the same answer.
    app.ok(
        "mutation($n: String!, $v: String!) { setModelAlias(name: $n, alias: \"production\", version: $v) { name } }",
        json!({ "n": name, "v": version }),
    )
    .await;
    let mut aliased = fall.clone();
    aliased
        .model
        .as_object_mut()
        .unwrap()
        .remove("model_version");
    aliased.model["model_alias"] = json!("production");
    assert_eq!(rest(&app, &aliased, &edge_box()).await, fits);
    app.ok(
        "mutation($n: String!) { deleteModelAlias(name: $n, alias: \"production\") }",
        json!({ "n": name }),
    )
    .await;
    let resolution = rest(&app, &aliased, &edge_box()).await;
    assert_eq!(
        codes(&resolution),
        BTreeSet::from(["MISSING_MODEL_VERSION".into()]),
        "an alias that names nothing"
    );

    app.ok(
        "mutation($n: String!, $v: String!) { deleteModel(name: $n, version: $v) }",
        json!({ "n": name, "v": version }),
    )
    .await;
    let resolution = resolve_both(&app, &fall, &edge_box()).await;
    assert_eq!(resolution["fits"], false);
    assert_eq!(
        codes(&resolution),
        BTreeSet::from(["MISSING_MODEL_VERSION".into()])
    );
    let model = &resolution["components"][0];
    assert_eq!(
        (
            model["role"].as_str(),
            model["key"].as_str(),
            &model["file"]
        ),
        (
            Some("MODEL"),
            Some(format!("model {name} version {version}").as_str()),
            &Value::Null
        )
    );
    let missing = problem(&resolution, "MISSING_MODEL_VERSION");
    assert!(
        missing["message"].as_str().unwrap().contains(&version),
        "{missing}"
    );
    assert_ne!(resolution["lock"], fits["lock"]);
}

pub async fn parts_requiring_incompatible_versions_are_a_library_conflict(start: Starter) {
    let app = start(test_config()).await;
    let scratch = app
        .load_inference_server_use_case("scratch_detection")
        .await;
    // A transformation built against an older torch, put before the detector that needs torch>=2.4.
    app.ok(
        r#"mutation { createTransformation(input: {id: "legacy.torch_resize",
            needs: {ram: 0.1, preinstalledLibraries: [{name: "torch", version: "<2.3"}]}}) { id } }"#,
        json!({}),
    )
    .await;
    app.upload(
        "mutation($file: Upload!) { uploadTransformationFile(id: \"legacy.torch_resize\", file: $file) { id } }",
        json!({}),
        testkit::bytes(512, 25),
        "legacy.torch_resize.zip",
    )
    .await;
    let mut conflicting = scratch.clone();
    conflicting
        .preprocessing
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "legacy.torch_resize", "parameters": {"size": [1200, 900]}}));
    let mut pipeline = scratch.pipeline_input();
    pipeline["preprocessing"]
        .as_array_mut()
        .unwrap()
        .push(json!("legacy.torch_resize"));
    let resolution = rest(&app, &conflicting, &gpu_server()).await;
    assert_eq!(resolution, graphql(&app, &pipeline, &gpu_server()).await);
    assert_eq!(resolution["fits"], false);
    let inferencer = format!(
        "inferencer {}",
        scratch.setup["inference"]["inferencer"].as_str().unwrap()
    );
    // The device's torch 2.4.1 is refused by the newcomer; the newcomer and each part needing torch>=2.4 conflict
    // whatever the device has, and each conflict names both parts.
    assert_eq!(
        codes(&resolution),
        BTreeSet::from(["LIBRARY_CONFLICT".into(), "LIBRARY_VERSION".into()])
    );
    let conflicts: Vec<&str> = resolution["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["code"] == "LIBRARY_CONFLICT")
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert!(
        conflicts.iter().any(|m| m.contains("legacy.torch_resize")
            && m.contains(&inferencer)
            && m.contains("<2.3")
            && m.contains(">=2.4")),
        "{conflicts:#?}"
    );
    assert!(
        conflicts.iter().all(|m| m.contains("legacy.torch_resize")),
        "only the newcomer conflicts: {conflicts:#?}"
    );
    // On a device with the old torch, the conflict stays: no device can satisfy both.
    let mut old_torch = gpu_server();
    for library in old_torch["libraries"].as_array_mut().unwrap() {
        if library["name"] == "torch" {
            library["version"] = json!("2.2.0");
        }
    }
    let resolution = rest(&app, &conflicting, &old_torch).await;
    assert!(
        codes(&resolution).contains("LIBRARY_CONFLICT"),
        "{resolution:#}"
    );
}

pub async fn the_lock_changes_exactly_when_a_fetched_file_does(start: Starter) {
    let app = start(test_config()).await;
    let fall = app.load_inference_server_use_case("fall_detection").await;
    let lock = async || rest(&app, &fall, &edge_box()).await["lock"].clone();
    let before = lock().await;
    assert!(before.as_str().unwrap().starts_with("sha256:"), "{before}");
    // A description is not fetched: the lock stays.
    app.ok(
        r#"mutation { updateTransformation(id: "custom.merge_as_column", input: {description: "merges columns"}) { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(lock().await, before);
    // Not the order of the request's fields either: the same configuration, the same lock.
    let (_, reordered) = post(
        &app,
        &json!({
            "device": edge_box(), "postprocessing": fall.postprocessing, "preprocessing": fall.preprocessing,
            "model": fall.model, "setup": fall.setup,
        }),
    )
    .await;
    assert_eq!(reordered["lock"], before);
    // A new file for one part: what the device fetches changes, and so does the lock.
    let replacement = testkit::bytes(3000, 26);
    let response = app
        .upload(
            "mutation($file: Upload!) { uploadTransformationFile(id: \"custom.merge_as_column\", file: $file) { id } }",
            json!({}),
            replacement.clone(),
            "custom.merge_as_column.zip",
        )
        .await;
    assert_eq!(response.status(), 200);
    let after = rest(&app, &fall, &edge_box()).await;
    assert_ne!(after["lock"], before);
    let merged = after["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "transformation custom.merge_as_column")
        .unwrap();
    assert_eq!(merged["file"]["sha256"], sha256_hex(&replacement));
    // The original bytes back: the original lock back.
    let original = inference_server::component("transformation custom.merge_as_column");
    app.upload(
        "mutation($file: Upload!) { uploadTransformationFile(id: \"custom.merge_as_column\", file: $file) { id } }",
        json!({}),
        inference_server::file_of(&original),
        "custom.merge_as_column.zip",
    )
    .await;
    assert_eq!(lock().await, before);
}

pub async fn pipeline_requests_of_another_shape_are_refused_naming_the_field(start: Starter) {
    let app = start(test_config()).await;
    let fall = app.load_inference_server_use_case("fall_detection").await;
    let send = async |content_type: &str, body: Vec<u8>| {
        let response = app
            .client
            .post(app.url("/pipelines/resolve"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let good = serde_json::to_vec(&fall.request(&edge_box())).unwrap();
    let (status, body) = send("text/plain", good.clone()).await;
    assert_eq!(
        (status, &body["code"]),
        (415, &json!("UNSUPPORTED_MEDIA_TYPE"))
    );
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"setup\": ".to_vec(), "not JSON"),
        (b"[]".to_vec(), "JSON object"),
    ];
    let mut without_device = fall.request(&edge_box());
    without_device.as_object_mut().unwrap().remove("device");
    let mut misspelt = fall.request(&edge_box());
    misspelt["preprocesing"] = misspelt["preprocessing"].take();
    let mut bad_step = fall.request(&edge_box());
    bad_step["preprocessing"][2] = json!({"parameters": {}});
    let mut bad_device = fall.request(&edge_box());
    bad_device["device"]["ram"] = json!("plenty");
    let mut bad_id = fall.request(&edge_box());
    bad_id["preprocessing"][0]["id"] = json!("no spaces/or slashes");
    for (body, field) in [
        (without_device, "device"),
        (misspelt, "preprocesing"),
        (bad_step, "preprocessing[2]"),
        (bad_device, "device"),
        (bad_id, "preprocessing[0].id"),
    ] {
        cases.push((serde_json::to_vec(&body).unwrap(), field));
    }
    for (body, field) in cases {
        let (status, answer) = send("application/json", body.clone()).await;
        let what = String::from_utf8_lossy(&body);
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("INVALID_INPUT")),
            "{what}: {answer}"
        );
        assert!(
            answer["detail"].as_str().unwrap().contains(field),
            "{what}: {answer}"
        );
    }
    // A component the repository does not have is an answer, not an error.
    let mut unknown = fall.clone();
    unknown.preprocessing[0]["id"] = json!("custom.not_uploaded");
    let resolution = rest(&app, &unknown, &edge_box()).await;
    assert_eq!(
        codes(&resolution),
        BTreeSet::from(["MISSING_COMPONENT".into()])
    );
    // Every part may be left out: the answer for nothing is an empty fit.
    let (status, empty) = post(&app, &json!({ "device": {} })).await;
    assert_eq!((status, &empty["fits"]), (200, &json!(true)), "{empty}");
    assert_eq!(empty["components"], json!([]));
    // The right request still works after all that.
    let (status, _) = send("application/json", good).await;
    assert_eq!(status, 200);
}
