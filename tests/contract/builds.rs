//! Several builds of one platform (4-, 8- and 16-bit), each with needs of its own: every way of asking which file a
//! device gets (`fileFor`, `runnableOn`, `resolvePipeline`, a download's `?platform=`) picks the same build.

use serde_json::{Value, json};

use super::Starter;
use crate::common::{TestApp, bytes, sha256_hex, test_config};

const CUDA: &str = r#"{"os": "linux", "arch": "amd64", "accelerator": "cuda"}"#;

/// The three builds with the GPU memory each needs.
const BUILDS: [(&str, f64); 3] = [("4bit", 6.0), ("8bit", 10.0), ("16bit", 18.0)];

fn device(gpu_memory: f64) -> Value {
    json!({
        "gpu": true, "gpuMemory": gpu_memory, "ram": 32,
        "platform": {"os": "linux", "arch": "amd64", "accelerators": [{"name": "cuda", "version": "8.9"}]}
    })
}

async fn upload_build(
    app: &TestApp,
    mutation: &str,
    precision: &str,
    gpu_memory: f64,
    data: Vec<u8>,
) -> Value {
    let platform: Value = serde_json::from_str(CUDA).unwrap();
    app.upload(
        mutation,
        json!({ "p": platform, "precision": precision, "needs": {"gpuMemory": gpu_memory} }),
        data,
        &format!("llm-{precision}.bin"),
    )
    .await
    .json()
    .await
    .unwrap()
}

const MODEL_UPLOAD: &str = "mutation($p: PlatformInput, $precision: String, $needs: NeedsInput, $file: Upload!) { \
     uploadModelFile(name: \"llm\", version: \"1\", file: $file, platform: $p, precision: $precision, needs: $needs) { \
     variants { platform { precision accelerator } needs { gpuMemory gpu } file { sha256 } } } }";
const INFERENCER_UPLOAD: &str = "mutation($p: PlatformInput, $precision: String, $needs: NeedsInput, $file: Upload!) { \
     uploadInferencerFile(id: \"llm-runner\", file: $file, platform: $p, precision: $precision, needs: $needs) { \
     variants { platform { precision } } } }";

pub async fn builds_are_chosen_by_what_the_device_holds(start: Starter) {
    let app = start(test_config()).await;
    app.create_model("llm", "1", "vllm").await;
    app.ok(
        "mutation { a: createInferencer(input: {id: \"llm-runner\", needs: {gpu: true, ram: 4}}) { id } \
         b: createInferencer(input: {id: \"plain-runner\", needs: {ram: 2}}) { id } }",
        json!({}),
    )
    .await;
    let plain = bytes(64, 9);
    app.upload(
        "mutation($file: Upload!) { uploadInferencerFile(id: \"plain-runner\", file: $file) { id } }",
        json!({}),
        plain.clone(),
        "runner.zip",
    )
    .await;
    let mut sha = std::collections::BTreeMap::new();
    for (i, (precision, gpu_memory)) in BUILDS.into_iter().enumerate() {
        let data = bytes(1000 + i, i as u64);
        sha.insert(precision, sha256_hex(&data));
        upload_build(&app, MODEL_UPLOAD, precision, gpu_memory, data.clone()).await;
        upload_build(&app, INFERENCER_UPLOAD, precision, gpu_memory, data).await;
    }

    // One platform holds the three builds, each with its precision and its own needs.
    let variants = app
        .ok(
            "{ model(name: \"llm\", version: \"1\") { variants { platform { precision accelerator } needs { gpuMemory gpu } file { sha256 } } } }",
            json!({}),
        )
        .await["model"]["variants"]
        .clone();
    assert_eq!(variants.as_array().unwrap().len(), 3, "{variants:#}");
    assert_eq!(
        variants[1],
        json!({"platform": {"precision": "8bit", "accelerator": "cuda"}, "needs": {"gpuMemory": 10.0, "gpu": true}, "file": {"sha256": sha["8bit"]}})
    );

    // A 12 GB GPU gets the 8-bit build from fileFor, runnableOn and resolvePipeline alike.
    let query = "query($d: DeviceInput!) { \
         model(name: \"llm\", version: \"1\") { fileFor(device: $d) { sha256 } unmetNeeds(device: $d) { need wanted has } } \
         runnableOn(device: $d, kinds: [INFERENCER]) { edges { node { ... on Inferencer { id fileFor(device: $d) { sha256 } } } } } \
         resolvePipeline(device: $d, pipeline: {model: {name: \"llm\", version: \"1\"}, inferencer: \"plain-runner\"}) { \
           fits lock totals { gpuMemory ram downloadBytes } \
           components { role kind key file { sha256 platform { precision } needs { gpuMemory } } } \
           problems { role component code message } } }";
    let fits = app.ok(query, json!({ "d": device(12.0) })).await;
    assert_eq!(fits["model"]["fileFor"]["sha256"], sha["8bit"], "{fits:#}");
    assert_eq!(fits["model"]["unmetNeeds"], json!([]));
    let listed = &fits["runnableOn"]["edges"];
    assert_eq!(
        listed,
        &json!([
            {"node": {"id": "llm-runner", "fileFor": {"sha256": sha["8bit"]}}},
            {"node": {"id": "plain-runner", "fileFor": {"sha256": sha256_hex(&plain)}}}
        ])
    );
    let resolved = &fits["resolvePipeline"];
    assert_eq!(resolved["fits"], true, "{resolved:#}");
    assert_eq!(resolved["problems"], json!([]));
    assert_eq!(resolved["components"][0]["file"]["sha256"], sha["8bit"]);
    assert_eq!(
        resolved["components"][0]["file"]["platform"]["precision"],
        "8bit"
    );
    assert_eq!(
        resolved["components"][1]["file"]["sha256"],
        sha256_hex(&plain)
    );
    assert_eq!(resolved["totals"]["gpuMemory"], 10.0);
    assert_eq!(resolved["totals"]["ram"], 2.0);
    assert_eq!(resolved["totals"]["downloadBytes"], 1001 + 64);
    // A download naming the same device gets the same bytes.
    let path = "/model/llm/1?platform=linux/amd64&accelerator=cuda&accelerator_version=8.9";
    let (status, body) = app.download(&format!("{path}&gpu_memory=12")).await;
    assert_eq!((status, sha256_hex(&body)), (200, sha["8bit"].clone()));
    // A bigger GPU gets the biggest build; a device silent about its GPU memory is not refused a build for it, and
    // gets the least demanding one: what cannot be judged is not risked.
    let big = app.ok(query, json!({ "d": device(24.0) })).await;
    assert_eq!(big["model"]["fileFor"]["sha256"], sha["16bit"]);
    let (_, body) = app.download(path).await;
    assert_eq!(sha256_hex(&body), sha["4bit"]);
    let mut silent = device(0.0);
    silent.as_object_mut().unwrap().remove("gpuMemory");
    let silent = app.ok(query, json!({ "d": silent })).await;
    assert_eq!(silent["model"]["fileFor"]["sha256"], sha["4bit"]);

    // A 4 GB GPU gets none, and learns why from the nearest build.
    let small = app.ok(query, json!({ "d": device(4.0) })).await;
    assert_eq!(small["model"]["fileFor"], Value::Null);
    assert_eq!(
        small["model"]["unmetNeeds"],
        json!([{"need": "gpuMemory", "wanted": "6 GB", "has": "4 GB"}])
    );
    assert_eq!(
        small["runnableOn"]["edges"],
        json!([{"node": {"id": "plain-runner", "fileFor": {"sha256": sha256_hex(&plain)}}}])
    );
    let refused = &small["resolvePipeline"];
    assert_eq!(refused["fits"], false);
    assert_eq!(refused["components"][0]["file"], Value::Null);
    let problems = refused["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0]["code"], "GPU_MEMORY_EXCEEDED");
    assert_eq!(problems[0]["role"], "MODEL");
    assert_eq!(problems[0]["component"], "model llm version 1");
    let message = problems[0]["message"].as_str().unwrap();
    assert!(
        message.contains("6 GB") && message.contains("4 GB"),
        "{message}"
    );
    assert_ne!(
        refused["lock"], resolved["lock"],
        "what the device would fetch differs"
    );
    let response = app.get(&format!("{path}&gpu_memory=4")).await;
    assert_eq!(response.status(), 404);
    let detail = response.json::<Value>().await.unwrap();
    assert!(detail.to_string().contains("gpuMemory"), "{detail}");

    // Re-uploading a build with new needs replaces that build only.
    let replaced = upload_build(&app, MODEL_UPLOAD, "8bit", 13.0, bytes(2000, 7)).await;
    let variants = &replaced["data"]["uploadModelFile"]["variants"];
    assert_eq!(variants.as_array().unwrap().len(), 3, "{replaced:#}");
    assert_eq!(variants[1]["needs"]["gpuMemory"], 13.0);
    let after = app.ok(query, json!({ "d": device(12.0) })).await;
    assert_eq!(
        after["model"]["fileFor"]["sha256"], sha["4bit"],
        "13 GB no longer fits"
    );
}

pub async fn build_needs_are_checked_at_upload(start: Starter) {
    let app = start(test_config()).await;
    app.create_model("llm", "1", "vllm").await;
    let cases = [
        (
            json!({"needs": {"gpuMemory": 4}}),
            "needs without a platform",
        ),
        (json!({"precision": "4bit"}), "precision without a platform"),
        (
            json!({"p": serde_json::from_str::<Value>(CUDA).unwrap(), "needs": {"preinstalledLibraries": [{"name": "torch", "version": ">=2"}]}}),
            "libraries are the component's",
        ),
        (
            json!({"p": serde_json::from_str::<Value>(CUDA).unwrap(), "needs": {"gpuMemory": -1}}),
            "negative GPU memory",
        ),
        (
            json!({"p": serde_json::from_str::<Value>(CUDA).unwrap(), "precision": "4 bit!"}),
            "a precision that is no label",
        ),
    ];
    for (variables, why) in cases {
        let body: Value = app
            .upload(MODEL_UPLOAD, variables, bytes(10, 1), "f.bin")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "INVALID_INPUT",
            "{why}: {body:#}"
        );
    }
    let model = app
        .ok("{ model(name: \"llm\", version: \"1\") { file { sha256 } variants { file { sha256 } } } }", json!({}))
        .await;
    assert_eq!(
        model["model"],
        json!({"file": null, "variants": []}),
        "nothing was stored"
    );
}

/// A subscription to a pipeline's resolution sends it at once, then only when what the device would fetch changes
/// (or whether it fits): a description edit sends nothing, a replaced file and a move of the model's alias do.
pub async fn pipeline_subscribers_hear_of_changes_to_what_the_device_fetches(start: Starter) {
    use testkit::ws::GraphqlSocket;
    let app = start(test_config()).await;
    for version in ["1", "2"] {
        app.create_model("cam", version, "onnx").await;
        app.upload(
            "mutation($v: String!, $file: Upload!) { uploadModelFile(name: \"cam\", version: $v, file: $file) { name } }",
            json!({ "v": version }),
            bytes(300, version.parse().unwrap()),
            "cam.onnx",
        )
        .await;
    }
    app.ok(
        "mutation { a: setModelAlias(name: \"cam\", alias: \"production\", version: \"1\") { version } \
         b: createTransformation(input: {id: \"resize\", needs: {ram: 1}}) { id } }",
        json!({}),
    )
    .await;
    let first_resize = app
        .upload(
            "mutation($file: Upload!) { uploadTransformationFile(id: \"resize\", file: $file) { id } }",
            json!({}),
            bytes(100, 3),
            "resize.zip",
        )
        .await;
    assert_eq!(first_resize.status(), 200);
    let query = "subscription { pipelineResolutions(device: {ram: 4}, pipeline: {model: {name: \"cam\", alias: \"production\"}, \
                 preprocessing: [\"resize\"]}) { fits lock components { key file { sha256 } } } }";
    let mut socket = GraphqlSocket::subscribe(app.addr, "graphql-transport-ws", json!({}), query)
        .await
        .unwrap();
    let first = resolution(&mut socket).await;
    assert_eq!(first["fits"], true, "{first:#}");
    assert_eq!(first["components"][0]["key"], "model cam version 1");

    // A description changes nothing the device fetches: the next message is the replaced file's.
    app.ok(
        "mutation { updateTransformation(id: \"resize\", input: {description: \"resizes\"}) { id } }",
        json!({}),
    )
    .await;
    let replacement = bytes(120, 4);
    app.upload(
        "mutation($file: Upload!) { uploadTransformationFile(id: \"resize\", file: $file) { id } }",
        json!({}),
        replacement.clone(),
        "resize.zip",
    )
    .await;
    let replaced = resolution(&mut socket).await;
    assert_eq!(
        replaced["components"][1]["file"]["sha256"],
        sha256_hex(&replacement),
        "{replaced:#}"
    );
    assert_ne!(replaced["lock"], first["lock"]);

    // Moving the model's alias changes the model's file; a need the device cannot meet changes whether it fits.
    app.ok(
        "mutation { setModelAlias(name: \"cam\", alias: \"production\", version: \"2\") { version } }",
        json!({}),
    )
    .await;
    let moved = resolution(&mut socket).await;
    assert_eq!(
        moved["components"][0]["key"], "model cam version 2",
        "{moved:#}"
    );
    app.ok(
        "mutation { updateTransformation(id: \"resize\", input: {needs: {ram: 8}}) { id } }",
        json!({}),
    )
    .await;
    let too_big = resolution(&mut socket).await;
    assert_eq!(too_big["fits"], false, "{too_big:#}");
    assert_eq!(
        too_big["components"][1]["file"],
        Value::Null,
        "no build of it fits"
    );
}

async fn resolution(socket: &mut testkit::ws::GraphqlSocket) -> Value {
    let next = socket.next_result(std::time::Duration::from_secs(10)).await;
    next.expect("a resolution within 10 s").expect("no errors")["pipelineResolutions"].clone()
}
