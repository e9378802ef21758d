//! The OCI distribution API beyond the contract suite: logging in with a token as registries' clients do, and
//! manifest digests that survive a restart and a dump and restore (embedded store).

mod common;

use std::collections::BTreeMap;

use common::archive::{dump_embedded, populated_store, restore_embedded};
use common::oci::{clients, oras_pull, skopeo_run};
use common::{TestApp, bytes, config_with, report_skip, tokens};
use serde_json::{Value, json};

/// `oras login` (and skopeo's `--creds` / `--registry-token`) with a read token (as the Basic password, traded at the realm for a bearer token), then a pull;
/// a wrong token gets nothing.
#[tokio::test]
async fn oras_logs_in_with_a_token() {
    if let Err(reason) = clients() {
        return report_skip("oras_logs_in_with_a_token", &reason);
    }
    let app = common::embedded(config_with(|c| {
        c.auth = tokens(&["oci-read"], &["oci-write"], false)
    }))
    .await;
    let (status, _) = app
        .gql_as(
            Some("oci-write"),
            r#"mutation { createModel(input: {name: "m", version: "1"}) { name } }"#,
        )
        .await;
    assert_eq!(status, 200);
    let data = bytes(50_000, 3);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data.clone()).file_name("weights.bin"),
    );
    let upload = app
        .client
        .put(app.url("/model/m/1"))
        .bearer_auth("oci-write")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(upload.status().is_success(), "{}", upload.status());

    let anonymous = app.get("/v2/").await;
    assert_eq!(anonymous.status(), 401);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ok");
    let files = oras_pull(&app, "models/m:1", &out, Some("oci-read"))
        .await
        .unwrap();
    assert!(std::fs::read(&files[0]).unwrap() == data, "the pulled file");
    // oras-py retries a refused login for minutes, so the refusal it meets is checked at the realm directly.
    let refused = app
        .client
        .get(app.url("/v2/token"))
        .basic_auth("ci", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a wrong token gets no bearer token");
    // skopeo with the token as Basic credentials (through the realm) and as a bearer token directly.
    {
        let target = format!("docker://{}/models/m:1", app.addr);
        let manifest = app
            .client
            .get(app.url("/v2/models/m/manifests/1"))
            .bearer_auth("oci-read")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        for credentials in [["--creds", "ci:oci-read"], ["--registry-token", "oci-read"]] {
            let raw = skopeo_run(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                credentials[0],
                credentials[1],
                &target,
            ])
            .await
            .unwrap();
            assert_eq!(raw, manifest.as_ref(), "{credentials:?}");
        }
        let refused = skopeo_run(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            "--creds",
            "ci:wrong",
            &target,
        ])
        .await;
        assert!(refused.is_err(), "a wrong token inspected {refused:?}");
    }
    // A token sent directly as Bearer works without the realm.
    let direct = app
        .client
        .get(app.url("/v2/models/m/tags/list"))
        .bearer_auth("oci-read")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.json::<Value>().await.unwrap()["tags"], json!(["1"]));
}

/// Every tag of every repository with its manifest digest, read through `/v2/`.
async fn digests(app: &TestApp) -> BTreeMap<String, String> {
    let catalog: Value = app.get("/v2/_catalog").await.json().await.unwrap();
    let mut digests = BTreeMap::new();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: Value = app
            .get(&format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap();
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let response = app.get(&format!("/v2/{repo}/manifests/{tag}")).await;
            assert_eq!(response.status(), 200, "{repo}:{tag}");
            let digest = response.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_string();
            digests.insert(format!("{repo}:{tag}"), digest);
        }
    }
    digests
}

/// The same components have the same manifest digests after a restart and after a dump and restore: every
/// kind, variants (image indexes) and aliases included.
#[tokio::test]
async fn manifest_digests_survive_restart_and_dump_restore() {
    let source = populated_store().await;
    let app = common::embedded_in(source.path()).await;
    let before = digests(&app).await;
    for expected in [
        "models/fall-detection:pilot-2-1",
        "models/fall-detection:pilot-2-2",
        "models/fall-detection:production",
        "services/inference.svc:latest",
        "transformations/custom.img_transpose:latest",
    ] {
        assert!(before.contains_key(expected), "{expected}: {before:?}");
    }
    assert_eq!(
        before["models/fall-detection:production"], before["models/fall-detection:pilot-2-2"],
        "an alias tag is its version's manifest"
    );
    app.stop().await;
    let app = common::embedded_in(source.path()).await;
    assert_eq!(digests(&app).await, before, "after a restart");
    app.stop().await;

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("dump.tar");
    dump_embedded(source.path(), &archive);
    let target = tempfile::tempdir().unwrap();
    restore_embedded(target.path(), &archive);
    let app = common::embedded_in(target.path()).await;
    assert_eq!(digests(&app).await, before, "after a dump and restore");
}
