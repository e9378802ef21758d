//! Device reports (`POST /devices/{id}/report`): stored and listed by hardware class and by what devices run,
//! expired after `--device-report-ttl`, guarding what live devices run against deletion, and reported only with
//! device or write tokens.

use std::time::Duration;

use serde_json::{Value, json};

use super::Starter;
use crate::common::{TestApp, config_with, eventually, test_config, tokens};

const JETSON: &str = r#"{"platform": {"os": "linux", "arch": "arm64",
    "accelerators": [{"name": "cuda", "version": "12.2"}]}, "gpu": true, "gpuMemory": 7.4, "ram": 8}"#;
const PC: &str = r#"{"platform": {"os": "linux", "arch": "amd64"}, "ram": 16}"#;

/// Sends a report; returns the status and the JSON answer.
async fn report(app: &TestApp, token: Option<&str>, id: &str, body: &Value) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/devices/{id}/report")))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn body(device: &str, running: Value, requests: u64) -> Value {
    json!({
        "device": serde_json::from_str::<Value>(device).unwrap(),
        "running": running,
        "health": {"requests": requests, "errors": 1, "p99Ms": 42.5},
    })
}

fn ids(devices: &Value) -> Vec<&str> {
    devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect()
}

const DEVICE_FIELDS: &str = "id hardwareClass lastSeen reportedBy gpuMemory platform { os arch variant accelerators \
    { name version } } running { kind id name version sha256 } health { requests errors p99Ms }";

pub async fn device_reports_are_stored_and_listed_by_class(start: Starter) {
    let app = start(test_config()).await;
    let sha = "a".repeat(64);
    let detector = json!([{"kind": "model", "name": "det", "version": "2", "sha256": sha}]);
    let (status, stored) =
        report(&app, None, "jetson-1", &body(JETSON, detector.clone(), 10)).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["hardwareClass"], "linux/arm64/v8+cuda@gpu8g");
    for (id, device, running) in [
        ("jetson-2", JETSON, json!([])),
        ("pc-1", PC, json!([{"kind": "service", "id": "svc"}])),
    ] {
        assert_eq!(
            report(&app, None, id, &body(device, running, 5)).await.0,
            200
        );
    }
    // The latest report replaces the previous one.
    assert_eq!(
        report(&app, None, "jetson-2", &body(JETSON, detector, 7))
            .await
            .0,
        200
    );
    let data = app
        .ok(
            &format!(
                r#"{{ jetsons: devices(filter: {{hardwareClass: "linux/arm64/v8+cuda@gpu8g"}}) {{ {DEVICE_FIELDS} }}
                    pcs: devices(filter: {{hardwareClass: "linux/amd64/v1@ram16g"}}) {{ id }}
                    det: devices(filter: {{running: {{kind: MODEL, name: "det", version: "2"}}}}) {{ id }}
                    svc: devices(filter: {{running: {{kind: SERVICE, id: "svc"}}}}) {{ id }}
                    all: devices {{ id }}
                    one: device(id: "jetson-2") {{ {DEVICE_FIELDS} }}
                    none: device(id: "never-reported") {{ id }} }}"#
            ),
            json!({}),
        )
        .await;
    assert_eq!(ids(&data["jetsons"]), ["jetson-1", "jetson-2"], "{data}");
    assert_eq!(ids(&data["pcs"]), ["pc-1"], "{data}");
    assert_eq!(ids(&data["det"]), ["jetson-1", "jetson-2"], "{data}");
    assert_eq!(ids(&data["svc"]), ["pc-1"], "{data}");
    assert_eq!(
        ids(&data["all"]),
        ["jetson-1", "jetson-2", "pc-1"],
        "{data}"
    );
    let one = &data["one"];
    assert_eq!(
        one["health"],
        json!({"requests": 7, "errors": 1, "p99Ms": 42.5})
    );
    assert_eq!(
        one["running"],
        json!([{"kind": "MODEL", "id": null, "name": "det", "version": "2", "sha256": sha}])
    );
    assert_eq!(one["platform"]["variant"], "v8");
    assert_eq!(one["platform"]["accelerators"][0]["name"], "cuda");
    assert_eq!(one["reportedBy"], "anonymous");
    assert!(one["lastSeen"].as_str().is_some(), "{one}");
    assert_eq!(data["none"], Value::Null);

    // Bad reports are precise 4xx and leave the stored report as it was.
    let negative = json!({"device": {"ram": -1}});
    let (status, answer) = report(&app, None, "jetson-2", &negative).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{answer}"
    );
    let too_many: Vec<Value> = (0..65)
        .map(|i| json!({"kind": "service", "id": format!("s{i}")}))
        .collect();
    let (status, _) = report(&app, None, "jetson-2", &json!({ "running": too_many })).await;
    assert_eq!(status, 400);
    let huge = json!({"device": {"libraries": [{"name": "x".repeat(70_000), "version": "1"}]}});
    let (status, answer) = report(&app, None, "jetson-2", &huge).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{answer}"
    );
    let response = app
        .client
        .post(app.url("/devices/jetson-2/report"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let (status, _) = report(&app, None, "jetson-2", &json!([])).await;
    assert_eq!(status, 422);
    let data = app
        .ok(
            r#"{ device(id: "jetson-2") { health { requests } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["device"]["health"]["requests"], 7);

    // Replacing a file a device runs is not refused; the device's entry then says it runs an old file.
    app.create_service("cam-svc").await;
    let first = app
        .upload_service_file("cam-svc", b"build 1".to_vec())
        .await;
    let running = json!([{"kind": "service", "id": "cam-svc", "sha256": first}]);
    assert_eq!(
        report(&app, None, "pc-2", &body(PC, running, 1)).await.0,
        200
    );
    let current = async |device: &str| {
        let query = format!(r#"{{ device(id: "{device}") {{ running {{ current }} }} }}"#);
        let data = app.ok(&query, json!({})).await;
        data["device"]["running"][0]["current"].clone()
    };
    assert_eq!(current("pc-2").await, json!(true));
    app.upload_service_file("cam-svc", b"build 2".to_vec())
        .await;
    assert_eq!(current("pc-2").await, json!(false));
    assert_eq!(current("pc-1").await, Value::Null, "no sha256 sent");
}

pub async fn device_reports_expire_after_their_ttl(start: Starter) {
    let app = start(config_with(|c| {
        c.device_report_ttl = Duration::from_secs(1)
    }))
    .await;
    app.create_service("svc").await;
    let running = json!([{"kind": "service", "id": "svc"}]);
    assert_eq!(
        report(&app, None, "cam-1", &body(PC, running.clone(), 1))
            .await
            .0,
        200
    );
    let live = r#"{ devices { id } device(id: "cam-1") { id } }"#;
    let data = app.ok(live, json!({})).await;
    assert_eq!(ids(&data["devices"]), ["cam-1"], "{data}");
    let expired = eventually(Duration::from_secs(10), async || {
        let data = app.ok(live, json!({})).await;
        data["devices"] == json!([]) && data["device"] == Value::Null
    })
    .await;
    assert!(expired, "the report expired after its TTL");
    // An expired report protects nothing: the service it named deletes without force.
    let deleted = app
        .gql(r#"mutation { deleteService(id: "svc") }"#, json!({}))
        .await;
    assert_eq!(deleted["data"]["deleteService"], true, "{deleted}");
    // A new report makes the device live again.
    assert_eq!(
        report(&app, None, "cam-1", &body(PC, json!([]), 1)).await.0,
        200
    );
    let data = app.ok(live, json!({})).await;
    assert_eq!(ids(&data["devices"]), ["cam-1"], "{data}");
}

pub async fn deleting_what_live_devices_run_is_refused_unless_forced(start: Starter) {
    let app = start(test_config()).await;
    app.create_model("det", "2", "pytorch").await;
    app.create_model("det", "3", "pytorch").await;
    for id in ["svc", "idle"] {
        app.create_service(id).await;
    }
    let running =
        json!([{"kind": "model", "name": "det", "version": "2"}, {"kind": "service", "id": "svc"}]);
    for device in ["jetson-1", "jetson-2"] {
        assert_eq!(
            report(&app, None, device, &body(JETSON, running.clone(), 3))
                .await
                .0,
            200
        );
    }
    let refused = app
        .gql(
            r#"mutation { deleteModel(name: "det", version: "2") }"#,
            json!({}),
        )
        .await;
    let error = &refused["errors"][0];
    assert_eq!(error["extensions"]["code"], "IN_USE", "{refused}");
    assert_eq!(error["extensions"]["devices"], 2, "{refused}");
    let response = app
        .client
        .delete(app.url("/service/svc"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["code"].as_str(), answer["devices"].as_u64()),
        (Some("IN_USE"), Some(2))
    );
    // Both are still there.
    let data = app
        .ok(
            r#"{ model(name: "det", version: "2") { name } service(id: "svc") { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["service"]["id"], "svc", "{data}");
    assert_eq!(data["model"]["name"], "det", "{data}");
    // What no device runs deletes as before; a device that moves on releases what it ran.
    let deleted = app
        .gql(
            r#"mutation { deleteModel(name: "det", version: "3") deleteService(id: "idle") }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        deleted["data"],
        json!({"deleteModel": true, "deleteService": true}),
        "{deleted}"
    );
    assert_eq!(
        report(&app, None, "jetson-2", &body(JETSON, json!([]), 3))
            .await
            .0,
        200
    );
    let refused = app
        .gql(
            r#"mutation { deleteModel(name: "det", version: "2") }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["devices"], 1,
        "{refused}"
    );
    // Forced, both go.
    let forced = app
        .gql(
            r#"mutation { deleteModel(name: "det", version: "2", force: true) }"#,
            json!({}),
        )
        .await;
    assert_eq!(forced["data"]["deleteModel"], true, "{forced}");
    let response = app
        .client
        .delete(app.url("/service/svc?force=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let data = app
        .ok(
            r#"{ model(name: "det", version: "2") { name } service(id: "svc") { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data, json!({"model": null, "service": null}));
}

pub async fn device_tokens_report_and_read_but_cannot_write(start: Starter) {
    let auth = tokens(&["r"], &["w"], false).with_device_tokens(&["d".into()]);
    let app = start(config_with(|c| c.auth = auth)).await;
    let empty = json!({});
    assert_eq!(report(&app, Some("d"), "cam-1", &empty).await.0, 200);
    assert_eq!(report(&app, Some("w"), "cam-2", &empty).await.0, 200);
    let (status, answer) = report(&app, Some("r"), "cam-3", &empty).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{answer}"
    );
    let (status, answer) = report(&app, None, "cam-3", &empty).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{answer}"
    );
    // A device token reads...
    let (status, data) = app
        .gql_as(
            Some("d"),
            "{ devices { id reportedBy } services { totalCount } }",
        )
        .await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(
        data["data"]["devices"],
        json!([{"id": "cam-1", "reportedBy": "device-token-1"}, {"id": "cam-2", "reportedBy": "write-token-1"}])
    );
    assert_eq!(
        app.get_with("/model", &[("authorization", "Bearer d")])
            .await
            .status(),
        200
    );
    // ...and writes nothing else, over GraphQL or REST.
    let (status, refused) = app
        .gql_as(
            Some("d"),
            r#"mutation { createService(input: {id: "s"}) { id } }"#,
        )
        .await;
    assert_eq!(
        (status, refused["errors"][0]["extensions"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    let response = app
        .client
        .post(app.url("/service"))
        .bearer_auth("d")
        .json(&json!({"id": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = app
        .client
        .delete(app.url("/service/s"))
        .bearer_auth("d")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let (_, data) = app.gql_as(Some("w"), "{ services { totalCount } }").await;
    assert_eq!(data["data"]["services"]["totalCount"], 0, "{data}");
}
