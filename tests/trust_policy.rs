//! The trust policy as an operator runs it: re-read on SIGHUP (stored signatures judged anew), audit mode serving
//! and counting, and a server that will not start on a policy it cannot use.

mod common;

use std::time::Duration;

use common::process::{ServerProcess, run};
use common::{bytes, config_with, eventually};
use serde_json::{Value, json};
use testkit::signing::{Key, Policy, available, sign_with_key};

const WAIT: Duration = Duration::from_secs(30);

async fn create_signed_model(client: &reqwest::Client, base: &str, data: &[u8], bundle: &str) {
    let created = client
        .post(format!("{base}/model"))
        .json(&json!({"model_name": "fall", "model_version": "1", "meta": {"library": "onnx", "description": ""}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data.to_vec()).file_name("model.onnx"),
    );
    let uploaded = client
        .put(format!("{base}/model/fall/1"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 204);
    let attached = client
        .post(format!("{base}/model/fall/1/signatures"))
        .header("content-type", "application/json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(attached.status(), 201);
}

#[tokio::test]
async fn sighup_rereads_the_policy_and_judges_stored_signatures_anew() {
    if let Err(reason) = available() {
        return common::report_skip(
            "sighup_rereads_the_policy_and_judges_stored_signatures_anew",
            &reason,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (old_key, new_key) = (Key::p256(dir.path()), Key::p256(dir.path()));
    let policy_path = dir.path().join("policy.toml");
    let write_policy = |key: &Key| {
        let written = Policy::new()
            .rule(&["model"], "*")
            .key(key)
            .write(dir.path());
        std::fs::rename(written, &policy_path).unwrap();
    };
    write_policy(&old_key);
    let data = bytes(50_000, 81);
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, &data).unwrap();
    let bundle = sign_with_key(&file, &new_key);

    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--signatures",
            "enforce",
            "--trust-policy",
            policy_path.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    create_signed_model(&client, &server.base, &data, &bundle).await;
    let download = format!("{}/model/fall/1", server.base);
    let status = |client: reqwest::Client, url: String| async move {
        client.get(&url).send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(client.clone(), download.clone()).await, 403);

    // The publisher's new key goes into the policy; SIGHUP, and the stored signature verifies.
    write_policy(&new_key);
    server.signal("HUP");
    assert!(
        eventually(WAIT, async || status(client.clone(), download.clone())
            .await
            == 200)
        .await,
        "the re-read policy never verified the stored signature"
    );
    let listing: Value = client
        .get(format!("{download}/signatures"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["signatures"][0]["verified"], true, "{listing}");
    assert_eq!(
        listing["signatures"][0]["signer"],
        new_key.fingerprint.as_str()
    );

    // A policy that does not load leaves the one in force.
    std::fs::write(&policy_path, "[[rule]]\nkeys = [\"missing.pem\"]\n").unwrap();
    server.signal("HUP");
    let log = server.log.clone();
    assert!(
        eventually(WAIT, async || log
            .lock()
            .unwrap()
            .contains("the previous one stays in force"))
        .await,
        "the failed re-read is logged"
    );
    assert_eq!(status(client.clone(), download.clone()).await, 200);
}

#[tokio::test]
async fn audit_mode_serves_unverified_files_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    std::fs::create_dir(&key_dir).unwrap();
    // A policy needs a key file; this one is written by hand (no CLI needed to judge an unsigned file).
    let key = include_str!("../src/domain/signing/testdata/p256.pub.pem");
    std::fs::write(key_dir.join("publisher.pem"), key).unwrap();
    let policy = key_dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nmatch = \"*\"\nkeys = [\"publisher.pem\"]\n",
    )
    .unwrap();
    let app = common::embedded(config_with(|c| {
        c.signatures.trust_policy = Some(policy);
    }))
    .await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    let data = bytes(1_000, 82);
    app.upload_service_file("svc", data.clone()).await;
    for _ in 0..3 {
        let response = app.get("/service/svc").await;
        assert_eq!(response.status(), 200, "audit mode serves");
        assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "repository_unverified_downloads_total{outcome=\"served\"} 3"),
        "{metrics}"
    );
    let shown = app
        .ok(
            "{ service(id: \"svc\") { file { signatures { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(shown["service"]["file"]["signatures"], json!([]));
}

#[test]
fn a_policy_the_server_cannot_use_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nmatch = \"*\"\nkeys = [\"absent.pem\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    for (args, expected) in [
        (
            vec!["--trust-policy", policy.to_str().unwrap()],
            "absent.pem",
        ),
        (vec!["--signatures", "enforce"], "--trust-policy"),
    ] {
        let mut all = vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        all.extend(args);
        let output = run(&all);
        assert!(!output.status.success(), "{all:?} started");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(said.contains(expected), "{all:?}: {said}");
    }
}
