//! Rollouts: an alias moves to a new version hardware class by hardware class, each class gated on the health its
//! devices report; a class that degrades reverts while the others complete.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::Starter;
use crate::common::{Config, TestApp, config_with, eventually, tokens};

/// Two hardware classes: `linux/amd64/v1@ram16g` and `linux/arm64/v8+cuda@gpu8g`.
const PC: &str = r#"{"platform": {"os": "linux", "arch": "amd64"}, "ram": 16}"#;
const JETSON: &str = r#"{"platform": {"os": "linux", "arch": "arm64",
    "accelerators": [{"name": "cuda", "version": "12.2"}]}, "gpu": true, "gpuMemory": 7.4}"#;
const PC_CLASS: &str = "linux/amd64/v1@ram16g";
const JETSON_CLASS: &str = "linux/arm64/v8+cuda@gpu8g";

const ROLLOUT_FIELDS: &str = "id state applied fromVersion version steps classes { hardwareClass percent step state reason \
    candidate { devices requests errors errorRate p99Ms } baseline { devices errorRate p99Ms } }";

fn fast() -> Config {
    config_with(|c| c.rollout_tick = Duration::from_millis(200))
}

/// Model `det` 1.0 and 2.0, each with a file, and `production` on 1.0.
async fn two_versions(app: &TestApp) {
    for version in ["1.0", "2.0"] {
        app.create_model("det", version, "onnx").await;
        let response = app
            .upload(
                r#"mutation($v: String!, $file: Upload!) { uploadModelFile(name: "det", version: $v, file: $file) { name } }"#,
                json!({ "v": version }),
                format!("weights {version}").into_bytes(),
                "det.onnx",
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    app.ok(
        r#"mutation { setModelAlias(name: "det", alias: "production", version: "1.0") { name } }"#,
        json!({}),
    )
    .await;
}

/// `n` devices of each class, named `pc-<i>` and `jetson-<i>`.
fn fleet(n: usize) -> Vec<(String, &'static str)> {
    (0..n)
        .flat_map(|i| [(format!("pc-{i}"), PC), (format!("jetson-{i}"), JETSON)])
        .collect()
}

async fn report(
    app: &TestApp,
    token: Option<&str>,
    id: &str,
    device: &str,
    version: &str,
    errors: u64,
) -> u16 {
    let body = json!({
        "device": serde_json::from_str::<Value>(device).unwrap(),
        "running": [{"kind": "model", "name": "det", "version": version}],
        "health": {"requests": 100, "errors": errors, "p99Ms": 20.0},
    });
    let mut request = app
        .client
        .post(app.url(&format!("/devices/{id}/report")))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// The version the download route serves device `id` for `production` (`X-Model-Version`), checking that the
/// bytes are that version's file.
async fn version_for(app: &TestApp, token: Option<&str>, id: &str) -> String {
    let mut request = app
        .client
        .get(app.url(&format!("/model/det/@production?device={id}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "device {id}");
    let version = response.headers()["x-model-version"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.bytes().await.unwrap();
    assert_eq!(body.as_ref(), format!("weights {version}").as_bytes());
    version
}

async fn start_rollout(app: &TestApp, steps: &str, step_seconds: u64) -> Value {
    let query = format!(
        r#"mutation {{ startRollout(input: {{model: "det", alias: "production", version: "2.0", steps: {steps},
            stepSeconds: {step_seconds}, gate: {{maxErrorRate: 0.1, maxP99Ratio: 2, minReports: 2}}}}) {{ {ROLLOUT_FIELDS} }} }}"#
    );
    app.ok(&query, json!({})).await["startRollout"].clone()
}

async fn rollout(app: &TestApp, id: &str) -> Value {
    let query = format!(r#"{{ rollout(id: "{id}") {{ {ROLLOUT_FIELDS} }} }}"#);
    app.ok(&query, json!({})).await["rollout"].clone()
}

fn class<'a>(rollout: &'a Value, name: &str) -> &'a Value {
    rollout["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["hardwareClass"] == name)
        .unwrap_or_else(|| panic!("no class {name} in {rollout:#}"))
}

pub async fn rollouts_give_each_class_its_share_and_a_degraded_class_reverts(start: Starter) {
    let app = start(fast()).await;
    two_versions(&app).await;
    let devices = fleet(10);
    for (id, device) in &devices {
        assert_eq!(report(&app, None, id, device, "1.0", 0).await, 200);
    }
    // A device that does not run the model is no part of its rollout: its class would wait for it forever.
    let unrelated = json!({"device": {"platform": {"os": "linux", "arch": "riscv64"}},
        "running": [{"kind": "model", "name": "other", "version": "1"}]});
    let response = app
        .client
        .post(app.url("/devices/riscv-0/report"))
        .json(&unrelated)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = start_rollout(&app, "[30, 60]", 1).await;
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(started["state"], "RUNNING");
    assert_eq!(
        started["classes"].as_array().unwrap().len(),
        2,
        "{started:#}"
    );
    assert_eq!(started["steps"], json!([30, 60, 100]));
    assert_eq!(class(&started, PC_CLASS)["percent"], 30);
    assert_eq!(class(&started, JETSON_CLASS)["percent"], 30);

    // Exactly 30 % of each class, the same devices however often they ask, by REST and GraphQL alike.
    let mut given = BTreeMap::new();
    for (device, _) in &devices {
        given.insert(device.clone(), version_for(&app, None, device).await);
    }
    for prefix in ["pc-", "jetson-"] {
        let on_new = given
            .iter()
            .filter(|(d, v)| d.starts_with(prefix) && *v == "2.0")
            .count();
        assert_eq!(on_new, 3, "{prefix}: {given:?}");
    }
    for (device, version) in &given {
        assert_eq!(&version_for(&app, None, device).await, version);
        let query = format!(
            r#"{{ model(name: "det", alias: "production", device: "{device}") {{ version }} }}"#
        );
        assert_eq!(
            &app.ok(&query, json!({})).await["model"]["version"],
            version
        );
    }
    // An OCI client pulling the alias's tag names itself with `X-Device-Id` (or `?device=`): its cohort's manifest.
    for (device, version) in &given {
        let manifest = |path: String, header: Option<&str>| {
            let mut request = app.client.get(app.url(&path));
            if let Some(id) = header {
                request = request.header("x-device-id", id);
            }
            async move { request.send().await.unwrap().text().await.unwrap() }
        };
        let by_version = manifest(format!("/v2/models/det/manifests/{version}"), None).await;
        assert_eq!(
            manifest("/v2/models/det/manifests/production".into(), Some(device)).await,
            by_version
        );
        let by_query = format!("/v2/models/det/manifests/production?device={device}");
        assert_eq!(manifest(by_query, None).await, by_version);
    }
    // Caches in front of the registry must key tag answers on the device; a malformed device id is a 400.
    let tagged = app.get("/v2/models/det/manifests/production").await;
    assert_eq!(tagged.headers()["vary"], "X-Device-Id");
    let bad = app
        .client
        .get(app.url("/v2/models/det/manifests/production"))
        .header("x-device-id", "a/b")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // Without a device id (or for a device that never reported), the alias's stable version.
    let plain = app.get("/model/det/@production").await;
    assert_eq!(plain.headers()["x-model-version"], "1.0");
    assert_eq!(version_for(&app, None, "never-reported").await, "1.0");

    // The devices run what they are given and report; the Jetsons fail half their requests on 2.0.
    let finished = eventually(Duration::from_secs(60), async || {
        for (device, kind) in &devices {
            let version = version_for(&app, None, device).await;
            let errors = if *kind == JETSON && version == "2.0" {
                50
            } else {
                0
            };
            report(&app, None, device, kind, &version, errors).await;
        }
        // Ended, and its end applied to the alias (a moment after).
        rollout(&app, &id).await["applied"] == true
    })
    .await;
    assert!(finished, "{:#}", rollout(&app, &id).await);
    let ended = rollout(&app, &id).await;
    assert_eq!(ended["state"], "COMPLETED", "{ended:#}");
    let (pc, jetson) = (class(&ended, PC_CLASS), class(&ended, JETSON_CLASS));
    assert_eq!(
        (pc["state"].as_str(), pc["percent"].as_i64()),
        (Some("COMPLETED"), Some(100))
    );
    assert_eq!(
        (jetson["state"].as_str(), jetson["percent"].as_i64()),
        (Some("REVERTED"), Some(0))
    );
    let reason = jetson["reason"].as_str().unwrap();
    assert!(reason.starts_with("error rate 50.00 % on 2.0"), "{reason}");
    assert_eq!(jetson["candidate"]["errorRate"], 0.5);
    assert_eq!(jetson["baseline"]["errorRate"], 0.0);

    // Every PC now runs 2.0, every Jetson 1.0; the alias itself names 2.0.
    for (device, kind) in &devices {
        let wanted = if *kind == PC { "2.0" } else { "1.0" };
        assert_eq!(version_for(&app, None, device).await, wanted, "{device}");
    }
    assert_eq!(
        app.get("/model/det/@production").await.headers()["x-model-version"],
        "2.0"
    );

    // The feed says which class reverted and why; the alias's history records the move and the outcome.
    let data = app
        .ok(
            r#"{ events(first: 100, filter: {types: [ROLLOUT_STARTED, ROLLOUT_CLASS_ABORTED, ROLLOUT_ENDED]}) {
                edges { node { type version rollout { id state hardwareClass reason candidate { errorRate } } } } } }"#,
            json!({}),
        )
        .await;
    let events: Vec<&Value> = data["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["ROLLOUT_STARTED", "ROLLOUT_CLASS_ABORTED", "ROLLOUT_ENDED"],
        "{data:#}"
    );
    let aborted = &events[1]["rollout"];
    assert_eq!(
        (aborted["id"].as_str(), aborted["hardwareClass"].as_str()),
        (Some(id.as_str()), Some(JETSON_CLASS))
    );
    assert_eq!(aborted["candidate"]["errorRate"], 0.5);
    assert_eq!(events[2]["rollout"]["state"], "COMPLETED");
    let history = app
        .ok(
            r#"{ modelAliasHistory(name: "det", alias: "production") { from to by rollout { id state version completed reverted } } }"#,
            json!({}),
        )
        .await;
    let moves = history["modelAliasHistory"].as_array().unwrap().clone();
    let by = format!("rollout {id}");
    let tail = &moves[moves.len() - 2..];
    assert_eq!(
        tail[0],
        json!({"from": "1.0", "to": "2.0", "by": by, "rollout": null})
    );
    assert_eq!(
        tail[1],
        json!({"from": "2.0", "to": "2.0", "by": by, "rollout": {"id": id, "state": "COMPLETED", "version": "2.0",
            "completed": [PC_CLASS], "reverted": [JETSON_CLASS]}})
    );

    // A later rollout does not lift the reverted class's pin: out of its cohort, a Jetson stays on 1.0 (not the
    // 2.0 that failed its class), and after it was aborted, too.
    app.create_model("det", "3.0", "onnx").await;
    let response = app
        .upload(
            r#"mutation($file: Upload!) { uploadModelFile(name: "det", version: "3.0", file: $file) { name } }"#,
            json!({}),
            b"weights 3.0".to_vec(),
            "det.onnx",
        )
        .await;
    assert_eq!(response.status(), 200);
    let query = r#"mutation { startRollout(input: {model: "det", alias: "production", version: "3.0", steps: [50],
        stepSeconds: 3600}) { id } }"#;
    let again = app.ok(query, json!({})).await["startRollout"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (device, kind) in &devices {
        let version = version_for(&app, None, device).await;
        let outside = if *kind == PC { "2.0" } else { "1.0" };
        assert!(
            version == "3.0" || version == outside,
            "{device} got {version} during the later rollout"
        );
    }
    app.ok(
        &format!(r#"mutation {{ abortRollout(id: "{again}") {{ state }} }}"#),
        json!({}),
    )
    .await;
    for (device, kind) in &devices {
        let wanted = if *kind == PC { "2.0" } else { "1.0" };
        assert_eq!(
            version_for(&app, None, device).await,
            wanted,
            "{device} after an aborted rollout"
        );
    }
}

pub async fn rollouts_pause_resume_abort_and_hold_their_alias(start: Starter) {
    let app = start(fast()).await;
    two_versions(&app).await;
    for (id, device) in fleet(5) {
        assert_eq!(report(&app, None, &id, device, "1.0", 0).await, 200);
    }
    // Refusals name the field or the conflict; nothing starts.
    for (input, code) in [
        (
            r#"version: "2.0", steps: [], stepSeconds: 5"#,
            "INVALID_INPUT",
        ),
        (
            r#"version: "2.0", steps: [50, 40], stepSeconds: 5"#,
            "INVALID_INPUT",
        ),
        (
            r#"version: "2.0", steps: [50], stepSeconds: 0"#,
            "INVALID_INPUT",
        ),
        (
            r#"version: "1.0", steps: [50], stepSeconds: 5"#,
            "INVALID_INPUT",
        ),
        (
            r#"version: "9.9", steps: [50], stepSeconds: 5"#,
            "NOT_FOUND",
        ),
    ] {
        let query = format!(
            r#"mutation {{ startRollout(input: {{model: "det", alias: "production", {input}}}) {{ id }} }}"#
        );
        assert_eq!(app.error_code(&query, json!({})).await, code, "{input}");
    }
    let query = r#"mutation { startRollout(input: {model: "det", alias: "canary", version: "2.0", steps: [50], stepSeconds: 5}) { id } }"#;
    assert_eq!(app.error_code(query, json!({})).await, "NOT_FOUND");
    assert_eq!(
        app.ok(r#"{ rollouts(model: "det") { id } }"#, json!({}))
            .await["rollouts"],
        json!([])
    );

    let started = start_rollout(&app, "[40]", 3600).await;
    let id = started["id"].as_str().unwrap().to_string();
    let on_new = async || {
        let mut n = 0;
        for (device, _) in fleet(5) {
            n += usize::from(version_for(&app, None, &device).await == "2.0");
        }
        n
    };
    assert_eq!(
        on_new().await,
        4,
        "40 % of 5 devices, rounded up, in each of two classes"
    );

    // While it runs, the alias is the rollout's: no other move, no second rollout, no deleting either version.
    for mutation in [
        r#"mutation { setModelAlias(name: "det", alias: "production", version: "2.0") { name } }"#,
        r#"mutation { deleteModelAlias(name: "det", alias: "production") }"#,
        r#"mutation { deleteModel(name: "det", version: "2.0", force: true) }"#,
        r#"mutation { startRollout(input: {model: "det", alias: "production", version: "2.0", steps: [50], stepSeconds: 5}) { id } }"#,
    ] {
        assert_eq!(
            app.error_code(mutation, json!({})).await,
            "ROLLOUT_ACTIVE",
            "{mutation}"
        );
    }
    let response = app
        .client
        .delete(app.url("/model/det/2.0?force=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "ROLLOUT_ACTIVE"
    );

    let change = async |verb: &str| {
        let query = format!(r#"mutation {{ {verb}Rollout(id: "{id}") {{ state }} }}"#);
        app.gql(&query, json!({})).await
    };
    assert_eq!(
        change("pause").await["data"]["pauseRollout"]["state"],
        "PAUSED"
    );
    assert_eq!(on_new().await, 4, "a pause keeps the cohorts");
    assert_eq!(
        change("resume").await["data"]["resumeRollout"]["state"],
        "RUNNING"
    );
    assert_eq!(
        change("abort").await["data"]["abortRollout"]["state"],
        "ABORTED"
    );
    assert_eq!(on_new().await, 0, "an abort sends every device back");
    for verb in ["pause", "resume", "abort"] {
        let answer = change(verb).await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "ROLLOUT_FINISHED",
            "{answer}"
        );
    }
    let unknown = app
        .gql(
            r#"mutation { pauseRollout(id: "nope") { state } }"#,
            json!({}),
        )
        .await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let listed = app
        .ok(r#"{ rollouts(model: "det") { id state } }"#, json!({}))
        .await;
    assert_eq!(listed["rollouts"], json!([{"id": id, "state": "ABORTED"}]));
    let history = app
        .ok(r#"{ modelAliasHistory(name: "det", alias: "production") { from to rollout { state } } }"#, json!({}))
        .await;
    let last = history["modelAliasHistory"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last,
        json!({"from": "1.0", "to": "1.0", "rollout": {"state": "ABORTED"}})
    );
    // The alias is free again.
    app.ok(
        r#"mutation { setModelAlias(name: "det", alias: "production", version: "2.0") { name } }"#,
        json!({}),
    )
    .await;
}

pub async fn device_tokens_follow_rollouts_but_cannot_steer_them(start: Starter) {
    let mut config = fast();
    config.auth = tokens(&["r"], &["w"], false).with_device_tokens(&["d".into()]);
    let app = start(config).await;
    let (status, _) = app
        .gql_as(
            Some("w"),
            r#"mutation { createModel(input: {name: "det", version: "1.0"}) { name } }"#,
        )
        .await;
    assert_eq!(status, 200);
    for version in ["1.0", "2.0"] {
        if version == "2.0" {
            app.gql_as(
                Some("w"),
                r#"mutation { createModel(input: {name: "det", version: "2.0"}) { name } }"#,
            )
            .await;
        }
        let form = testkit::graphql::upload_form(
            r#"mutation($v: String!, $file: Upload!) { uploadModelFile(name: "det", version: $v, file: $file) { name } }"#,
            json!({ "v": version }),
            format!("weights {version}").into_bytes(),
            "det.onnx",
        );
        let response = testkit::graphql::post_upload(&app.client, &app.url(""), form)
            .bearer_auth("w")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    app.gql_as(
        Some("w"),
        r#"mutation { setModelAlias(name: "det", alias: "production", version: "1.0") { name } }"#,
    )
    .await;
    assert_eq!(report(&app, Some("d"), "pc-0", PC, "1.0", 0).await, 200);
    let start_query = r#"mutation { startRollout(input: {model: "det", alias: "production", version: "2.0", steps: [100], stepSeconds: 3600}) { id } }"#;
    for token in [None, Some("r"), Some("d")] {
        let (status, body) = app.gql_as(token, start_query).await;
        assert!(status == 401 || status == 403, "{token:?}: {status} {body}");
    }
    let (status, body) = app.gql_as(Some("w"), start_query).await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["startRollout"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The device reads its cohort's version and the rollout, but cannot pause it.
    assert_eq!(version_for(&app, Some("d"), "pc-0").await, "2.0");
    let (status, body) = app
        .gql_as(
            Some("d"),
            &format!(r#"{{ rollout(id: "{id}") {{ state }} }}"#),
        )
        .await;
    assert_eq!(
        (status, &body["data"]["rollout"]["state"]),
        (200, &json!("RUNNING")),
        "{body}"
    );
    let (status, _) = app
        .gql_as(
            Some("d"),
            &format!(r#"mutation {{ pauseRollout(id: "{id}") {{ state }} }}"#),
        )
        .await;
    assert!(status == 401 || status == 403, "{status}");
}

/// What a server hands over to the next (the same store after a restart, or another replica): a rollout that
/// has started and the version each device got.
pub struct Handover {
    id: String,
    given: BTreeMap<String, String>,
}

/// Starts a rollout of `production` on `app`'s fleet of eight devices.
pub async fn start_rollout_to_hand_over(app: &TestApp) -> Handover {
    two_versions(app).await;
    for (id, device) in fleet(4) {
        assert_eq!(report(app, None, &id, device, "1.0", 0).await, 200);
    }
    let started = start_rollout(app, "[50]", 1).await;
    let mut given = BTreeMap::new();
    for (device, _) in fleet(4) {
        let version = version_for(app, None, &device).await;
        given.insert(device, version);
    }
    Handover {
        id: started["id"].as_str().unwrap().to_string(),
        given,
    }
}

/// `app` carries the rollout on: the same state and cohorts, and it finishes it.
pub async fn finish_handed_over_rollout(app: &TestApp, handover: &Handover) {
    let Handover { id, given } = handover;
    assert_ne!(rollout(app, id).await["state"], Value::Null);
    for (device, version) in given {
        assert_eq!(
            &version_for(app, None, device).await,
            version,
            "{device} keeps its cohort"
        );
    }
    let finished = eventually(Duration::from_secs(60), async || {
        for (device, kind) in fleet(4) {
            let version = version_for(app, None, &device).await;
            report(app, None, &device, kind, &version, 0).await;
        }
        let now = rollout(app, id).await;
        now["state"] == "COMPLETED" && now["applied"] == true
    })
    .await;
    assert!(finished, "{:#}", rollout(app, id).await);
    assert_eq!(
        app.get("/model/det/@production").await.headers()["x-model-version"],
        "2.0"
    );
}

/// For the restart tests: the configuration they run with.
pub fn rollout_config() -> Config {
    fast()
}
