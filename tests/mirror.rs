//! Edge mirrors, with real servers on loopback: an upstream, the fault proxy between it and the mirror, and the
//! mirror (a third server for chains). Every wait is on a condition, bounded in time.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chaos::{ChaosProxy, Fault};
use common::{Config, TestApp, bytes, config_with, eventually, test_config, tokens};
use component_repository::config::{Mirror, Secret, load_device};
use component_repository::service::mirror::parse_include;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A site device with 8 GB of RAM, torch 2.3 and the `detector` model (which the site gets from its mirror).
fn small_device(dir: &Path) -> String {
    let path = dir.join("device.json");
    std::fs::write(
        &path,
        json!({ "ram": 8, "libraries": [{ "name": "torch", "version": "2.3.0" }],
                "models": [{ "name": "detector", "version": "v1" }] })
        .to_string(),
    )
    .unwrap();
    path.display().to_string()
}

/// A mirror of `upstream_url` with its data in `dir/data`, kept when the app stops.
/// `change` adjusts the mirror's settings.
async fn mirror(dir: &Path, upstream_url: &str, change: impl FnOnce(&mut Mirror)) -> TestApp {
    mirror_with(dir, upstream_url, change, test_config()).await
}

async fn mirror_with(
    dir: &Path,
    upstream_url: &str,
    change: impl FnOnce(&mut Mirror),
    mut config: Config,
) -> TestApp {
    let data = dir.join("data");
    let store = common::reopen(&data).await;
    let mut mirror = Mirror::new(upstream_url);
    mirror
        .devices
        .push(load_device(Path::new(&small_device(dir))).unwrap());
    change(&mut mirror);
    config.mirror = Some(mirror);
    TestApp::start(
        Arc::new(store),
        tempfile::tempdir().unwrap(),
        Some(data),
        config,
    )
    .await
}

async fn service(app: &TestApp, id: &str, ram: f64, models: Value) {
    app.ok(
        "mutation($input: CreateServiceInput!) { createService(input: $input) { id } }",
        json!({ "input": { "id": id, "description": format!("service {id}"),
                           "needs": { "ram": ram, "availableModels": models,
                                      "preinstalledLibraries": [{ "name": "torch", "version": ">=2" }] } } }),
    )
    .await;
}

async fn upload_service(app: &TestApp, id: &str, content: Vec<u8>) {
    let response = app
        .upload(
            "mutation($file: Upload!, $id: ID!) { uploadServiceFile(id: $id, file: $file) { id } }",
            json!({ "id": id }),
            content,
            "svc.zip",
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
}

async fn model(app: &TestApp, name: &str, version: &str, content: Vec<u8>) {
    app.ok(
        "mutation($input: CreateModelInput!) { createModel(input: $input) { name } }",
        json!({ "input": { "name": name, "version": version, "library": "torch" } }),
    )
    .await;
    let response = app
        .upload(
            "mutation($file: Upload!, $n: String!, $v: String!) { uploadModelFile(name: $n, version: $v, file: $file) { name } }",
            json!({ "n": name, "v": version }),
            content,
            "model.pt",
        )
        .await;
    assert_eq!(response.status(), 200);
}

async fn status(app: &TestApp) -> Value {
    app.ok(
        "{ mirror { upstream state lastSequence lagSeconds pendingFiles pendingBytes lastSyncAt lastError problems } }",
        json!({}),
    )
    .await["mirror"]
        .clone()
}

async fn download(app: &TestApp, path: &str) -> Option<Vec<u8>> {
    let response = app.get(path).await;
    (response.status() == 200).then_some(())?;
    Some(response.bytes().await.unwrap().to_vec())
}

const SERVICE_FIELDS: &str = "id description locked createdAt updatedAt needs { ram gpu availableModels { name version } } file { size sha256 contentType filename uploadedAt }";

/// Waits until `app` serves exactly `content` at `path`.
async fn wait_served(app: &TestApp, path: &str, content: &[u8]) {
    assert!(
        eventually(WAIT, async || download(app, path).await.as_deref()
            == Some(content))
        .await,
        "{path} never served the expected {} bytes",
        content.len()
    );
}

async fn service_json(app: &TestApp, id: &str) -> Value {
    app.ok(
        &format!("query($id: ID!) {{ service(id: $id) {{ {SERVICE_FIELDS} }} }}"),
        json!({ "id": id }),
    )
    .await["service"]
        .clone()
}

async fn wait_following(app: &TestApp) {
    assert!(
        eventually(WAIT, async || status(app).await["state"] == "FOLLOWING").await,
        "the mirror never caught up: {:#}",
        status(app).await
    );
}

#[tokio::test]
async fn mirror_holds_what_its_devices_run_follows_changes_and_refuses_writes() {
    let upstream = common::embedded(test_config()).await;
    let small = bytes(300_000, 1);
    service(
        &upstream,
        "small",
        2.0,
        json!([{ "name": "detector", "version": "v1" }]),
    )
    .await;
    upload_service(&upstream, "small", small.clone()).await;
    service(&upstream, "big", 64.0, json!([])).await;
    upload_service(&upstream, "big", bytes(1000, 2)).await;
    model(&upstream, "detector", "v1", bytes(200_000, 3)).await;
    model(&upstream, "detector", "v2", bytes(1000, 4)).await;
    model(&upstream, "extra", "v1", bytes(1000, 5)).await;

    let dir = tempfile::tempdir().unwrap();
    let site = mirror(dir.path(), &upstream.url(""), |m| {
        m.include = vec![parse_include("model:extra/v1").unwrap()]
    })
    .await;
    assert!(
        eventually(WAIT, async || site.get("/readyz").await.status() == 200).await,
        "the mirror is ready once the first sync is complete"
    );
    // What the device runs, the model it references and the extra; nothing else.
    assert_eq!(download(&site, "/service/small").await.unwrap(), small);
    assert_eq!(
        service_json(&site, "small").await,
        service_json(&upstream, "small").await
    );
    assert!(download(&site, "/model/detector/v1").await.is_some());
    assert!(download(&site, "/model/extra/v1").await.is_some());
    assert_eq!(site.get("/service/big").await.status(), 404);
    assert_eq!(site.get("/model/detector/v2").await.status(), 404);
    wait_following(&site).await;
    let s = status(&site).await;
    assert_eq!(s["upstream"], upstream.url(""));
    assert_eq!(s["lagSeconds"], 0.0);
    assert_eq!(s["lastError"], Value::Null);

    // Writes are refused, over GraphQL and REST.
    let code = site
        .error_code(
            "mutation { createService(input: {id: \"x\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "READ_ONLY_MIRROR");
    let response = site
        .client
        .delete(site.url("/service/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "READ_ONLY_MIRROR", "{body}");
    assert!(upstream.ok("{ mirror { state } }", json!({})).await["mirror"].is_null());

    // A replaced file upstream is served at the site, verified, once it is complete.
    let replaced = bytes(250_000, 9);
    upload_service(&upstream, "small", replaced.clone()).await;
    wait_served(&site, "/service/small", &replaced).await;
    // A new runnable component appears; one that becomes too big for the device goes, with its model.
    service(&upstream, "new", 1.0, json!([])).await;
    assert!(eventually(WAIT, async || !service_json(&site, "new").await.is_null()).await);
    upstream
        .ok(
            "mutation { updateService(id: \"small\", input: {needs: {ram: 32}}) { id } }",
            json!({}),
        )
        .await;
    assert!(eventually(WAIT, async || service_json(&site, "small").await.is_null()).await);
    assert!(
        eventually(WAIT, async || site.get("/model/detector/v1").await.status()
            == 404)
        .await,
        "a model no mirrored component references any more is removed"
    );
    assert!(
        download(&site, "/model/extra/v1").await.is_some(),
        "extras stay"
    );
    // Deletions upstream are applied.
    upstream
        .ok("mutation { deleteService(id: \"new\") }", json!({}))
        .await;
    assert!(eventually(WAIT, async || service_json(&site, "new").await.is_null()).await);
    // The mirror's own feed recorded what it applied.
    let events = site
        .ok("{ events(first: 1000) { nodes { type id } } }", json!({}))
        .await;
    let deleted = events["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "DELETED" && e["id"] == "new");
    assert!(deleted, "{events:#}");
}

#[tokio::test]
async fn cut_and_stalled_transfers_resume_and_the_upstream_going_down_is_survived() {
    let upstream = common::embedded(test_config()).await;
    let content = bytes(6 * 1024 * 1024, 11);
    service(&upstream, "svc", 1.0, json!([])).await;
    upload_service(&upstream, "svc", content.clone()).await;
    let proxy = ChaosProxy::start(upstream.addr).await;
    // Every connection breaks after 256 KiB: the file arrives in pieces, each resumed with Range.
    proxy.set(Fault::CutAfter(256 * 1024));
    let dir = tempfile::tempdir().unwrap();
    let site = mirror(dir.path(), &proxy.url(), |_| {}).await;
    assert!(
        eventually(WAIT, async || status(&site).await["lastError"].is_string()).await,
        "cut transfers are reported"
    );
    assert_eq!(
        site.get("/service/svc").await.status(),
        404,
        "a partial file is never served"
    );
    proxy.set(Fault::None);
    wait_served(&site, "/service/svc", &content).await;
    let fetched = proxy.downstream_bytes();
    assert!(
        fetched < content.len() as u64 + 2 * 1024 * 1024,
        "resumed, not fetched again: {fetched} bytes for {}",
        content.len()
    );

    // The upstream goes away: the mirror keeps serving, says so, and catches up when the link returns.
    wait_following(&site).await;
    proxy.set(Fault::Down);
    let later = bytes(100_000, 12);
    service(&upstream, "later", 1.0, json!([])).await;
    upload_service(&upstream, "later", later.clone()).await;
    // The event stream breaks at once; the mirror notices within its poll.
    assert!(
        eventually(WAIT, async || status(&site).await["state"] == "OFFLINE").await,
        "{:#}",
        status(&site).await
    );
    assert_eq!(download(&site, "/service/svc").await.unwrap(), content);
    assert_eq!(
        site.get("/readyz").await.status(),
        200,
        "still ready: it serves what it holds"
    );
    proxy.set(Fault::Stall);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.set(Fault::None);
    wait_served(&site, "/service/later", &later).await;
    wait_following(&site).await;
}

#[tokio::test]
async fn a_protected_upstream_needs_the_mirror_token() {
    let upstream = common::embedded(config_with(|c| c.auth = tokens(&["r"], &["w"], false))).await;
    let dir = tempfile::tempdir().unwrap();
    let without = mirror(dir.path(), &upstream.url(""), |_| {}).await;
    assert!(
        eventually(WAIT, async || status(&without).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("401")))
        .await,
        "{:#}",
        status(&without).await
    );
    assert_eq!(
        without.get("/readyz").await.status(),
        503,
        "not ready before a first sync"
    );
    without.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let with = mirror(dir.path(), &upstream.url(""), |m| {
        m.token = Some(Secret("r".into()))
    })
    .await;
    assert!(eventually(WAIT, async || with.get("/readyz").await.status() == 200).await);
    wait_following(&with).await;
}

/// `repository_mirror_fetched_bytes` from `/metrics`.
async fn fetched_bytes(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("repository_mirror_fetched_bytes_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_rate_cap_holds_within_20_percent() {
    let upstream = common::embedded(test_config()).await;
    let size = 5 * 1024 * 1024;
    service(&upstream, "svc", 1.0, json!([])).await;
    upload_service(&upstream, "svc", bytes(size, 21)).await;
    let proxy = ChaosProxy::start(upstream.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let rate = 1024 * 1024;
    let site = mirror(dir.path(), &proxy.url(), |m| m.max_rate = Some(rate)).await;
    // Timed between two marks inside the transfer, on the bytes the mirror took (socket buffers let the proxy run
    // ahead), so start-up and the first burst do not count.
    let (low, high) = (1024 * 1024u64, 4 * 1024 * 1024u64);
    let mark = async |at: u64| {
        let start = Instant::now();
        while fetched_bytes(&site).await < at {
            assert!(start.elapsed() < WAIT, "the transfer stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instant::now()
    };
    let t0 = mark(low).await;
    let t1 = mark(high).await;
    let measured = (high - low) as f64 / (t1 - t0).as_secs_f64();
    assert!(
        (0.8 * rate as f64..=1.2 * rate as f64).contains(&measured),
        "measured {measured:.0} bytes/s against a cap of {rate}"
    );
    assert!(
        eventually(WAIT, async || site.get("/service/svc").await.status()
            == 200)
        .await
    );
}

#[tokio::test]
async fn a_mirror_of_a_mirror_serves_the_same_and_follows_through_it() {
    let cloud = common::embedded(test_config()).await;
    let content = bytes(400_000, 31);
    service(&cloud, "svc", 1.0, json!([])).await;
    upload_service(&cloud, "svc", content.clone()).await;
    let region_dir = tempfile::tempdir().unwrap();
    let region = mirror(region_dir.path(), &cloud.url(""), |_| {}).await;
    let site_dir = tempfile::tempdir().unwrap();
    let site = mirror(site_dir.path(), &region.url(""), |_| {}).await;
    wait_served(&site, "/service/svc", &content).await;
    assert_eq!(
        service_json(&site, "svc").await,
        service_json(&cloud, "svc").await
    );
    // A change at the cloud reaches the site through the region's own feed.
    let replaced = bytes(123_456, 32);
    upload_service(&cloud, "svc", replaced.clone()).await;
    wait_served(&site, "/service/svc", &replaced).await;
    assert_eq!(
        service_json(&site, "svc").await,
        service_json(&cloud, "svc").await
    );
}

#[tokio::test]
async fn an_expired_feed_means_a_full_reconcile() {
    let upstream = common::embedded(config_with(|c| {
        c.events.retention.max_age = Duration::from_secs(3600);
        c.events.retention.max_count = 2;
        c.events.sweep_interval = Duration::from_secs(1);
    }))
    .await;
    service(&upstream, "kept", 1.0, json!([])).await;
    service(&upstream, "gone", 1.0, json!([])).await;
    let proxy = ChaosProxy::start(upstream.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let site = mirror(dir.path(), &proxy.url(), |_| {}).await;
    wait_following(&site).await;
    assert!(!service_json(&site, "gone").await.is_null());
    proxy.set(Fault::Down);
    assert!(eventually(WAIT, async || status(&site).await["state"] == "OFFLINE").await);
    upstream
        .ok("mutation { deleteService(id: \"gone\") }", json!({}))
        .await;
    for i in 0..5 {
        service(&upstream, &format!("new{i}"), 1.0, json!([])).await;
    }
    // Only the newest two events are kept: the mirror's sequence is no longer in the window.
    let expired = async || {
        upstream
            .gql("{ events(after: \"1\") { nodes { sequence } } }", json!({}))
            .await["errors"][0]["extensions"]["code"]
            == "EVENTS_EXPIRED"
    };
    assert!(eventually(WAIT, expired).await);
    proxy.set(Fault::None);
    assert!(eventually(WAIT, async || service_json(&site, "gone").await.is_null()).await);
    for i in 0..5 {
        assert!(!service_json(&site, &format!("new{i}")).await.is_null());
    }
    assert!(!service_json(&site, "kept").await.is_null());
}

/// Size of the one partial file in `dir` (0 when there is none).
fn partial_len(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("mirror-partial")).map_or(0, |entries| {
        entries.map(|e| e.unwrap().metadata().unwrap().len()).sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_sync_then_restart_resumes_without_fetching_completed_bytes() {
    use common::process::ServerProcess;
    let upstream = common::embedded(test_config()).await;
    let size = 12 * 1024 * 1024;
    let content = bytes(size, 41);
    service(&upstream, "svc", 1.0, json!([])).await;
    upload_service(&upstream, "svc", content.clone()).await;
    let proxy = ChaosProxy::start(upstream.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let device = small_device(dir.path());
    let url = proxy.url();
    let args = |extra: &[&'static str]| {
        let mut args = vec!["--mirror-upstream", &url, "--mirror-device", &device];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let first = args(&["--mirror-max-rate", "4MiB"]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start(&data, &first);
    assert!(
        eventually(WAIT, async || partial_len(&data) >= 4 * 1024 * 1024).await,
        "the transfer started"
    );
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    let kept = partial_len(&data);
    assert!(kept < size as u64, "killed mid-transfer");
    proxy.reset_counters();

    let again = args(&[]);
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let server = ServerProcess::start(&data, &again);
    let client = reqwest::Client::new();
    let served = async || {
        let Ok(response) = client
            .get(format!("{}/service/svc", server.base))
            .send()
            .await
        else {
            return false;
        };
        response.status() == 200 && response.bytes().await.unwrap()[..] == content[..]
    };
    assert!(eventually(WAIT, served).await);
    let refetched = proxy.downstream_bytes();
    let missing = size as u64 - kept;
    assert!(
        refetched < missing + 512 * 1024,
        "after the restart {refetched} bytes came from the upstream for the {missing} missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_air_gapped_site_restores_a_device_archive_then_follows_the_feed_from_it() {
    use common::process::run;
    let upstream = common::embedded(test_config()).await;
    let small = bytes(2 * 1024 * 1024, 51);
    service(
        &upstream,
        "small",
        2.0,
        json!([{ "name": "detector", "version": "v1" }]),
    )
    .await;
    upload_service(&upstream, "small", small.clone()).await;
    service(&upstream, "big", 64.0, json!([])).await;
    model(&upstream, "detector", "v1", bytes(1000, 52)).await;
    model(&upstream, "other", "v1", bytes(1000, 53)).await;
    let cloud = upstream.stop_keeping_data().await;
    let site = tempfile::tempdir().unwrap();
    let device = small_device(site.path());
    let archive = site.path().join("site.tar");
    let cloud_data = cloud.path().join("data");
    let dumped = run(&[
        "dump",
        "--data-dir",
        cloud_data.to_str().unwrap(),
        "--device",
        &device,
        "--out",
        archive.to_str().unwrap(),
    ]);
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );

    let upstream = common::embedded_in(cloud.path()).await;
    let proxy = ChaosProxy::start(upstream.addr).await;
    let site_data = site.path().join("data");
    let restored = run(&[
        "restore",
        "--data-dir",
        site_data.to_str().unwrap(),
        "--in",
        archive.to_str().unwrap(),
        "--mirror-upstream",
        &proxy.url(),
    ]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    // A change the site has not seen, made while it has no link.
    service(&upstream, "new", 1.0, json!([])).await;
    proxy.set(Fault::Down);
    let mirror = mirror(site.path(), &proxy.url(), |_| {}).await;
    // Ready without a link (the proxy is down): the sync task reads the restored state as it starts.
    assert!(
        eventually(WAIT, async || mirror.get("/readyz").await.status() == 200).await,
        "the archive is a complete first sync"
    );
    assert!(
        status(&mirror).await["lastSequence"].as_u64().unwrap() >= 4,
        "restore recorded the archive's upstream sequence"
    );
    assert_eq!(download(&mirror, "/service/small").await.unwrap(), small);
    assert!(download(&mirror, "/model/detector/v1").await.is_some());
    assert!(
        service_json(&mirror, "big").await.is_null(),
        "only what the device runs"
    );
    assert_eq!(mirror.get("/model/other/v1").await.status(), 404);
    proxy.reset_counters();
    proxy.set(Fault::None);
    assert!(eventually(WAIT, async || !service_json(&mirror, "new").await.is_null()).await);
    assert!(
        proxy.downstream_bytes() < small.len() as u64,
        "followed from the archive's sequence, without fetching the archive's files again"
    );
}

async fn set_alias(app: &TestApp, alias: &str, version: Option<&str>) {
    match version {
        Some(version) => app
            .ok(
                "mutation($a: String!, $v: String!) { setModelAlias(name: \"detector\", alias: $a, version: $v) { version } }",
                json!({ "a": alias, "v": version }),
            )
            .await,
        None => app
            .ok(
                "mutation($a: String!) { deleteModelAlias(name: \"detector\", alias: $a) }",
                json!({ "a": alias }),
            )
            .await,
    };
}

async fn aliased(app: &TestApp, alias: &str) -> Option<Vec<u8>> {
    download(app, &format!("/model/detector/@{alias}")).await
}

/// The mirror answers `@alias` routes as the upstream does, for the versions it holds: aliases set, moved and
/// deleted upstream follow, and a version that stops being needed goes with its aliases.
#[tokio::test]
async fn aliases_follow_the_upstream_for_the_versions_held() {
    let upstream = common::embedded(test_config()).await;
    let v1 = bytes(20_000, 1);
    model(&upstream, "detector", "v1", v1.clone()).await;
    model(&upstream, "detector", "v2", bytes(20_000, 2)).await;
    service(
        &upstream,
        "small",
        2.0,
        json!([{ "name": "detector", "version": "v1" }]),
    )
    .await;
    set_alias(&upstream, "production", Some("v1")).await;
    set_alias(&upstream, "candidate", Some("v2")).await;

    let dir = tempfile::tempdir().unwrap();
    let site = mirror(dir.path(), &upstream.url(""), |_| {}).await;
    wait_following(&site).await;
    assert_eq!(aliased(&site, "production").await.as_deref(), Some(&v1[..]));
    assert_eq!(
        site.get("/model/detector/@candidate").await.status(),
        404,
        "v2 is not held, so neither is its alias"
    );

    // Moved to a version the site does not keep, then back; a new alias; a deleted one.
    set_alias(&upstream, "production", Some("v2")).await;
    assert!(eventually(WAIT, async || aliased(&site, "production").await.is_none()).await);
    set_alias(&upstream, "production", Some("v1")).await;
    set_alias(&upstream, "stable", Some("v1")).await;
    assert!(eventually(WAIT, async || aliased(&site, "stable").await.is_some()).await);
    assert_eq!(aliased(&site, "production").await.as_deref(), Some(&v1[..]));
    set_alias(&upstream, "stable", None).await;
    assert!(eventually(WAIT, async || aliased(&site, "stable").await.is_none()).await);
    let meta = site
        .get("/model/meta?model_name=detector&model_alias=production")
        .await;
    assert_eq!(meta.status(), 200);

    // The service stops needing v1: the version goes from the site, and its alias with it.
    upstream
        .ok(
            "mutation { updateService(id: \"small\", input: {needs: {ram: 2, availableModels: []}}) { id } }",
            json!({}),
        )
        .await;
    assert!(
        eventually(WAIT, async || site.get("/model/detector/v1").await.status()
            == 404)
        .await
    );
    assert_eq!(site.get("/model/detector/@production").await.status(), 404);
    let s = status(&site).await;
    assert_eq!(s["lastError"], Value::Null, "{s:#}");
}

/// A file whose component leaves scope before its transfer finished leaves no partial bytes behind.
#[tokio::test]
async fn partial_files_of_components_that_left_scope_are_removed() {
    let upstream = common::embedded(test_config()).await;
    service(&upstream, "leaving", 1.0, json!([])).await;
    upload_service(&upstream, "leaving", bytes(4 * 1024 * 1024, 21)).await;
    let proxy = ChaosProxy::start(upstream.addr).await;
    proxy.set(Fault::CutAfter(256 * 1024));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let site = mirror(dir.path(), &proxy.url(), |_| {}).await;
    assert!(eventually(WAIT, async || partial_len(&data) > 0).await);
    proxy.set(Fault::Down);
    upstream
        .ok(
            "mutation { updateService(id: \"leaving\", input: {needs: {ram: 64}}) { id } }",
            json!({}),
        )
        .await;
    let kept = bytes(1000, 22);
    service(&upstream, "staying", 1.0, json!([])).await;
    upload_service(&upstream, "staying", kept.clone()).await;
    proxy.set(Fault::None);
    wait_served(&site, "/service/staying", &kept).await;
    wait_following(&site).await;
    assert_eq!(
        partial_len(&data),
        0,
        "the partial file of `leaving` is gone"
    );
    assert_eq!(site.get("/service/leaving").await.status(), 404);
}

/// The upstream is rebuilt at the same address, twice: first with a shorter feed (the mirror's sequence is beyond
/// its head: `EVENTS_AHEAD`), then with a longer one (the sequence exists, but the feed id changed). Each time the
/// mirror reconciles in full and stops serving what the new upstream does not have.
#[tokio::test]
async fn a_reset_upstream_means_a_full_reconcile_and_what_is_gone_goes() {
    let first = common::embedded(test_config()).await;
    service(&first, "kept", 1.0, json!([])).await;
    service(&first, "gone", 1.0, json!([])).await;
    upload_service(&first, "gone", bytes(10_000, 30)).await;
    for i in 0..4 {
        service(&first, &format!("old{i}"), 1.0, json!([])).await;
    }
    let proxy = ChaosProxy::start(first.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let site = mirror(dir.path(), &proxy.url(), |_| {}).await;
    wait_following(&site).await;
    assert!(download(&site, "/service/gone").await.is_some());
    let followed = status(&site).await["lastSequence"].as_u64().unwrap();

    // A rebuilt upstream with fewer events than the mirror has applied.
    let second = common::embedded(test_config()).await;
    service(&second, "kept", 1.0, json!([])).await;
    service(&second, "fresh", 1.0, json!([])).await;
    assert!(
        second.ok("{ lastSequence }", json!({})).await["lastSequence"]
            .as_u64()
            .unwrap()
            < followed
    );
    // The old one goes away, closing every connection through the proxy; the new one answers at its address.
    first.stop().await;
    proxy.retarget(second.addr);
    // A reconcile stores what is new before it removes what is gone: wait for both.
    let reconciled = async || {
        let mut gone = service_json(&site, "gone").await.is_null();
        for i in 0..4 {
            gone &= service_json(&site, &format!("old{i}")).await.is_null();
        }
        gone && !service_json(&site, "fresh").await.is_null()
    };
    assert!(
        eventually(WAIT, reconciled).await,
        "{:#}",
        status(&site).await
    );
    assert_eq!(site.get("/service/gone").await.status(), 404);
    assert!(!service_json(&site, "kept").await.is_null());
    wait_following(&site).await;
    let followed = status(&site).await["lastSequence"].as_u64().unwrap();

    // Rebuilt again, now with more events than that: the sequence exists there, but the feed is another one.
    let third = common::embedded(test_config()).await;
    for i in 0..(followed + 3) {
        service(&third, &format!("t{i}"), 1.0, json!([])).await;
    }
    second.stop().await;
    proxy.retarget(third.addr);
    let reconciled = async || {
        let mut now = service_json(&site, "kept").await.is_null()
            && service_json(&site, "fresh").await.is_null();
        for i in 0..(followed + 3) {
            now &= !service_json(&site, &format!("t{i}")).await.is_null();
        }
        now
    };
    assert!(
        eventually(WAIT, reconciled).await,
        "{:#}",
        status(&site).await
    );
    wait_following(&site).await;
}

/// What the lying upstream says; the test changes it as it goes.
#[derive(Default)]
struct Lies {
    feed_id: String,
    /// `Service` nodes as GraphQL would answer them.
    services: Vec<Value>,
    /// Bytes served at `/blobs/sha256/{digest}`, by digest.
    blobs: std::collections::HashMap<String, Vec<u8>>,
    /// Every GraphQL answer is an endless body.
    endless: bool,
    /// `runnableOn` always has a next page (the same one).
    endless_pages: bool,
    /// The paths of `/blobs` requests received.
    blob_requests: Vec<String>,
}

type SharedLies = Arc<std::sync::Mutex<Lies>>;

/// The attacker: a small upstream that speaks the mirror's protocol and says whatever the test makes it say.
/// Returns its URL and the count of endless-answer bytes it produced.
async fn lying_upstream(lies: SharedLies) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use axum::extract::State;
    use std::sync::atomic::{AtomicU64, Ordering};
    let produced = Arc::new(AtomicU64::new(0));
    let counter = produced.clone();
    let graphql = async move |State(lies): State<SharedLies>,
                              axum::Json(body): axum::Json<Value>| {
        let query = body["query"].as_str().unwrap_or_default().to_string();
        let lies = lies.lock().unwrap();
        if lies.endless {
            let counter = counter.clone();
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"data\":{\"feedId\":\""))
            });
            let chunk = bytes::Bytes::from(vec![b'a'; 64 * 1024]);
            let tail = futures_util::stream::repeat(chunk).map(move |c| {
                counter.fetch_add(c.len() as u64, Ordering::SeqCst);
                Ok(c)
            });
            return axum::response::Response::new(axum::body::Body::from_stream(head.chain(tail)));
        }
        let data = if query.contains("runnableOn") {
            let edges: Vec<Value> = lies.services.iter().map(|s| json!({ "node": s })).collect();
            let more = lies.endless_pages;
            json!({ "runnableOn": { "pageInfo": { "hasNextPage": more, "endCursor": "again" }, "edges": edges } })
        } else if query.contains("lastSequence") {
            json!({ "lastSequence": 1, "feedId": lies.feed_id })
        } else if query.contains("events(") {
            json!({ "feedId": lies.feed_id, "events": { "pageInfo": { "hasNextPage": false }, "nodes": [] } })
        } else if query.contains("c: service") {
            let id = body["variables"]["a"].clone();
            let found = lies.services.iter().find(|s| s["id"] == id).cloned();
            json!({ "c": found })
        } else if query.contains("models(") {
            json!({ "models": { "pageInfo": { "hasNextPage": false, "endCursor": null }, "edges": [] } })
        } else {
            json!({ "c": null })
        };
        axum::Json(json!({ "data": data })).into_response()
    };
    let blob = async |State(lies): State<SharedLies>, uri: axum::http::Uri| {
        let path = uri.path().to_string();
        let mut lies = lies.lock().unwrap();
        lies.blob_requests.push(path.clone());
        let digest = path.trim_start_matches("/blobs/sha256/");
        match lies.blobs.get(digest) {
            Some(bytes) => bytes.clone().into_response(),
            None => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    };
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    let app = axum::Router::new()
        .route("/graphql", axum::routing::post(graphql))
        .route("/blobs/{*rest}", axum::routing::get(blob))
        .with_state(lies);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, produced)
}

fn lying_service(id: &str, sha256: &str, size: u64) -> Value {
    let at = "2026-01-01T00:00:00Z";
    json!({ "__typename": "Service", "id": id, "description": "from a liar",
            "needs": { "storage": null, "ram": 1.0, "gpu": false, "preinstalledLibraries": [], "availableModels": [] },
            "locked": false, "createdAt": at, "updatedAt": at,
            "file": { "size": size, "sha256": sha256, "contentType": "application/zip", "filename": "s.zip",
                      "uploadedAt": at },
            "variants": [] })
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// An upstream that lies (or was intercepted: `http://` upstreams are allowed) cannot make the mirror touch a path
/// outside its data directory, store a file larger than it accepts, or read an endless answer into memory; the
/// mirror says what went wrong and keeps serving what it holds.
#[tokio::test]
async fn a_lying_upstream_cannot_escape_the_data_dir_overfill_or_exhaust_the_mirror() {
    let good = bytes(1000, 40);
    let good_sha = common::sha256_hex(&good);
    let big = bytes(2_000_000, 41);
    let big_sha = common::sha256_hex(&big);
    let lies: SharedLies = Arc::default();
    {
        let mut l = lies.lock().unwrap();
        l.feed_id = "feed-1".into();
        l.blobs.insert(good_sha.clone(), good.clone());
        l.blobs.insert(big_sha.clone(), big.clone());
        // Digests that are paths: into the data directory's parent, and an absolute one.
        l.services = vec![
            lying_service("good", &good_sha, good.len() as u64),
            lying_service("evil", "../../escaped", 5),
        ];
    }
    let (url, produced) = lying_upstream(lies.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let limited = config_with(|c| c.uploads.max_size = 1_000_000);
    let site = mirror_with(dir.path(), &url, |_| {}, limited).await;
    assert!(
        eventually(WAIT, async || status(&site).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("sha256")))
        .await,
        "{:#}",
        status(&site).await
    );
    lies.lock().unwrap().services[1] = lying_service("evil", "/tmp/escaped", 5);
    let before = status(&site).await["lastError"].clone();
    assert!(
        eventually(WAIT, async || status(&site).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("/tmp/escaped")))
        .await,
        "{before}"
    );
    let mut here: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    here.sort();
    assert_eq!(
        here,
        ["data", "device.json"],
        "nothing was created beside the data directory"
    );
    assert!(!Path::new("/tmp/escaped-5").exists());
    assert!(
        lies.lock()
            .unwrap()
            .blob_requests
            .iter()
            .all(|p| !p.contains("..") && !p.contains("tmp")),
        "a digest that is not one is never asked for"
    );
    assert_eq!(
        site.get("/readyz").await.status(),
        503,
        "nothing synced yet"
    );

    // A file over the mirror's own --max-upload-size: refused, said so, never fetched; the rest is kept.
    lies.lock().unwrap().services[1] = lying_service("big", &big_sha, big.len() as u64);
    wait_served(&site, "/service/good", &good).await;
    wait_following(&site).await;
    assert_eq!(site.get("/service/big").await.status(), 404);
    assert!(service_json(&site, "big").await.is_null());
    let problems = status(&site).await["problems"].clone();
    assert!(
        problems[0]
            .as_str()
            .is_some_and(|p| p.starts_with("service big:") && p.contains("--max-upload-size")),
        "{problems}"
    );
    let asked = lies.lock().unwrap().blob_requests.clone();
    assert!(!asked.iter().any(|p| p.contains(&big_sha)), "{asked:?}");

    // A body longer than the size declared: never written past that size, discarded, the component not kept.
    let long = bytes(5000, 42);
    let long_sha = common::sha256_hex(&long[..1000]);
    {
        let mut l = lies.lock().unwrap();
        l.blobs.insert(long_sha.clone(), long.clone());
        l.services[1] = lying_service("long", &long_sha, 1000);
        // Announced through a new feed id, so that the mirror lists again.
        l.feed_id = "feed-long".into();
    }
    assert!(
        eventually(WAIT, async || status(&site).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(&long_sha)))
        .await,
        "{:#}",
        status(&site).await
    );
    assert!(service_json(&site, "long").await.is_null());
    let partial = dir.path().join("data").join("mirror-partial");
    let longest = std::fs::read_dir(&partial).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().metadata().unwrap().len())
            .max()
            .unwrap_or(0)
    });
    assert!(longest <= 1000, "a partial file of {longest} bytes");
    assert_eq!(download(&site, "/service/good").await.unwrap(), good);
    lies.lock().unwrap().services.truncate(1);

    // A new feed id (the upstream was reset) whose listing never ends: refused, not accumulated; once the listing
    // ends, the reconcile completes.
    {
        let mut l = lies.lock().unwrap();
        l.feed_id = "feed-2".into();
        l.endless_pages = true;
    }
    assert!(
        eventually(WAIT, async || status(&site).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("does not end")))
        .await,
        "{:#}",
        status(&site).await
    );
    assert_eq!(download(&site, "/service/good").await.unwrap(), good);
    lies.lock().unwrap().endless_pages = false;
    wait_following(&site).await;

    // A page with more components than asked for (100): refused, not accumulated; the mirror keeps serving.
    {
        let mut l = lies.lock().unwrap();
        l.feed_id = "feed-3".into();
        let many: Vec<Value> = (0..101)
            .map(|i| lying_service(&format!("many-{i}"), &good_sha, good.len() as u64))
            .collect();
        l.services.extend(many);
    }
    assert!(
        eventually(WAIT, async || status(&site).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("larger than asked for")))
        .await,
        "{:#}",
        status(&site).await
    );
    assert_eq!(download(&site, "/service/good").await.unwrap(), good);
    lies.lock().unwrap().services.truncate(1);
    wait_following(&site).await;

    // Endless answers: read up to the cap and refused; memory stays bounded and the mirror keeps serving.
    let rss_before = rss();
    lies.lock().unwrap().endless = true;
    assert!(
        eventually(WAIT, async || status(&site).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("longer than")))
        .await,
        "{:#}",
        status(&site).await
    );
    assert_eq!(status(&site).await["state"], "OFFLINE");
    assert_eq!(download(&site, "/service/good").await.unwrap(), good);
    let sent = produced.load(std::sync::atomic::Ordering::SeqCst);
    let grown = rss().saturating_sub(rss_before);
    lies.lock().unwrap().endless = false;
    // What one endless answer could push before the mirror hung up: its cap and the socket buffers, not more.
    let answers = 1 + sent / (32 << 20);
    assert!(sent < answers * (48 << 20), "{sent} bytes sent");
    assert!(grown < 400 << 20, "memory grew by {grown} bytes");
    wait_following(&site).await;
    assert_eq!(download(&site, "/service/good").await.unwrap(), good);
}

/// An edge mirror speaks OCI too: the same manifest (same digest, the component's metadata being the same) and
/// the same bytes as its upstream, so registry clients and P2P engines can use the mirror; pushes are refused.
#[tokio::test]
async fn a_mirror_serves_the_upstreams_oci_artifacts_and_refuses_pushes() {
    let cloud = common::embedded(test_config()).await;
    let content = bytes(200_000, 41);
    service(&cloud, "svc", 1.0, json!([])).await;
    upload_service(&cloud, "svc", content.clone()).await;
    let site_dir = tempfile::tempdir().unwrap();
    let site = mirror(site_dir.path(), &cloud.url(""), |_| {}).await;
    wait_served(&site, "/service/svc", &content).await;
    let manifest = |app: &TestApp| {
        let url = app.url("/v2/services/svc/manifests/latest");
        let client = app.client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        }
    };
    let at_site = manifest(&site).await;
    assert_eq!(
        at_site,
        manifest(&cloud).await,
        "the same manifest, byte for byte"
    );
    let parsed: Value = serde_json::from_slice(&at_site).unwrap();
    let layer = parsed["layers"][0]["digest"].as_str().unwrap();
    let blob = download(&site, &format!("/v2/services/svc/blobs/{layer}")).await;
    assert!(
        blob.as_deref() == Some(content.as_slice()),
        "the mirror's blob"
    );
    let push = site
        .client
        .post(site.url(&format!("/v2/models/m/blobs/uploads/?digest={layer}")))
        .body(content)
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), 403);
    let body: Value = push.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "READ_ONLY_MIRROR", "{body}");
}

/// A bundle whose DSSE signature no longer matches its statement (one byte of the signature changed): it still
/// parses and names the file, so an upstream without a policy keeps it.
fn tampered(bundle: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut value: Value = serde_json::from_str(bundle).unwrap();
    let sig = value["dsseEnvelope"]["signatures"][0]["sig"]
        .as_str()
        .unwrap();
    let mut raw = engine.decode(sig).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    value["dsseEnvelope"]["signatures"][0]["sig"] = json!(engine.encode(raw));
    value.to_string()
}

/// An edge mirror judges signatures with its own trust policy, never the upstream's word: with `enforce`, a file
/// whose bundle was tampered with is not stored nor served, and is counted; a verified one is.
#[tokio::test]
async fn an_enforcing_mirror_keeps_only_files_its_own_policy_verifies() {
    use testkit::signing::{Key, Policy, available, sign_with_key};
    if let Err(reason) = available() {
        return common::report_skip(
            "an_enforcing_mirror_keeps_only_files_its_own_policy_verifies",
            &reason,
        );
    }
    let keys = tempfile::tempdir().unwrap();
    let publisher = Key::p256(keys.path());
    // The upstream checks nothing: it keeps whatever parses and names the file.
    let cloud = common::embedded(test_config()).await;
    let (good, bad) = (bytes(40_000, 71), bytes(40_000, 72));
    for (id, content) in [("good", &good), ("tampered", &bad)] {
        service(&cloud, id, 1.0, json!([])).await;
        upload_service(&cloud, id, content.clone()).await;
        let file = keys.path().join(id);
        std::fs::write(&file, content).unwrap();
        let mut bundle = sign_with_key(&file, &publisher);
        if id == "tampered" {
            bundle = tampered(&bundle);
        }
        let response = cloud
            .attach_signature(&format!("/service/{id}"), &bundle)
            .await;
        assert_eq!(response.status(), 201);
    }
    let policy = Policy::new()
        .rule(&["service"], "*")
        .key(&publisher)
        .write(keys.path());
    let site_dir = tempfile::tempdir().unwrap();
    let config = config_with(|c| {
        c.signatures = component_repository::config::Signatures {
            mode: Some(component_repository::service::signing::SignatureMode::Enforce),
            trust_policy: Some(policy),
        }
    });
    let site = mirror_with(site_dir.path(), &cloud.url(""), |_| {}, config).await;
    wait_following(&site).await;
    wait_served(&site, "/service/good", &good).await;
    let signatures: Value = site
        .get("/service/good/signatures")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        signatures["signatures"][0]["verified"], true,
        "{signatures}"
    );

    // Nothing of the tampered file: no component, no bytes; the status says why and counts it.
    assert_eq!(site.get("/service/tampered").await.status(), 404);
    let digest = common::sha256_hex(&bad);
    assert_eq!(
        site.get(&format!("/blobs/sha256/{digest}")).await.status(),
        404
    );
    let status = site
        .ok("{ mirror { problems unverifiedFiles } }", json!({}))
        .await["mirror"]
        .clone();
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("tampered") && problems.contains(&digest),
        "{status}"
    );
    assert!(status["unverifiedFiles"].as_u64().unwrap() >= 1, "{status}");
    let metrics = site.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("repository_mirror_unverified_files_total ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    // Signed properly upstream, the file comes over.
    let file = keys.path().join("tampered");
    let response = cloud
        .attach_signature("/service/tampered", &sign_with_key(&file, &publisher))
        .await;
    assert_eq!(response.status(), 201);
    wait_served(&site, "/service/tampered", &bad).await;
}

/// A site that runs one pipeline holds exactly its parts (every version of a model named by an alias) with the
/// builds for its device's platform, and resolves the pipeline as the upstream does.
#[tokio::test]
async fn a_pipeline_mirror_holds_exactly_what_its_pipeline_resolves_to() {
    use component_repository::domain::pipeline::{ModelRef, Pipeline};
    use component_repository::service::mirror::MirrorPipeline;
    let upstream = common::embedded(test_config()).await;
    let (v1, v2) = (bytes(10_000, 61), bytes(10_000, 62));
    model(&upstream, "cam", "v1", v1.clone()).await;
    model(&upstream, "cam", "v2", v2.clone()).await;
    upstream
        .ok(
            "mutation { a: setModelAlias(name: \"cam\", alias: \"production\", version: \"v1\") { version } \
             b: createTransformation(input: {id: \"resize\", needs: {ram: 1}}) { id } }",
            json!({}),
        )
        .await;
    service(&upstream, "svc", 1.0, json!([])).await;
    upload_service(&upstream, "svc", bytes(3_000, 63)).await;
    service(&upstream, "other", 1.0, json!([])).await;
    upload_service(&upstream, "other", bytes(3_000, 64)).await;
    let (arm, cuda) = (bytes(4_000, 65), bytes(4_000, 66));
    for (platform, content) in [
        (json!({"os": "linux", "arch": "arm64"}), arm.clone()),
        (
            json!({"os": "linux", "arch": "amd64", "accelerator": "cuda"}),
            cuda,
        ),
    ] {
        let response = upstream
            .upload(
                "mutation($p: PlatformInput, $file: Upload!) { uploadTransformationFile(id: \"resize\", file: $file, platform: $p) { id } }",
                json!({ "p": platform }),
                content,
                "resize.zip",
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let device_json = json!({"ram": 8, "libraries": [{"name": "torch", "version": "2.3.0"}],
                             "platform": {"os": "linux", "arch": "arm64"}});
    let device = component_repository::domain::parse_device(&device_json).unwrap();
    let pipeline = Pipeline {
        model: Some(ModelRef::Alias {
            name: "cam".into(),
            alias: "production".into(),
        }),
        preprocessing: vec!["resize".into()],
        services: vec!["svc".into()],
        ..Pipeline::default()
    };

    let dir = tempfile::tempdir().unwrap();
    let site = mirror(dir.path(), &upstream.url(""), |m| {
        m.devices.clear();
        m.pipelines.push(MirrorPipeline { pipeline, device });
    })
    .await;
    wait_following(&site).await;
    wait_served(&site, "/model/cam/@production", &v1).await;
    wait_served(&site, "/model/cam/v2", &v2).await;
    assert_eq!(site.get("/service/svc").await.status(), 200);
    assert_eq!(
        site.get("/service/other").await.status(),
        404,
        "a component outside the pipeline is not mirrored, though the device could run it"
    );
    let variants = site
        .ok(
            "{ transformation(id: \"resize\") { variants { platform { arch } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        variants["transformation"]["variants"],
        json!([{"platform": {"arch": "arm64"}}]),
        "only the build for the site's platform"
    );
    let resolve = "query($d: DeviceInput!) { resolvePipeline(device: $d, pipeline: {model: {name: \"cam\", alias: \"production\"}, \
                   preprocessing: [\"resize\"], services: [\"svc\"]}) { fits lock } }";
    let here = site.ok(resolve, json!({ "d": device_json })).await;
    let there = upstream.ok(resolve, json!({ "d": device_json })).await;
    assert_eq!(here["resolvePipeline"]["fits"], true, "{here:#}");
    assert_eq!(
        here, there,
        "the site resolves the pipeline to the same files"
    );
    assert_eq!(status(&site).await["lastError"], Value::Null);
}

/// A site device as it reports to the upstream (its hardware class is all a rollout needs of it).
const REPORTING_DEVICE: &str = r#"{"platform": {"os": "linux", "arch": "amd64"}, "ram": 16}"#;

/// Upstream with `detector` v1 (`production`, needed by the site's service) and v2, rolling out quickly; and its
/// mirror, following.
async fn rollout_site(dir: &Path) -> (TestApp, TestApp, Vec<u8>) {
    let upstream =
        common::embedded(config_with(|c| c.rollout_tick = Duration::from_millis(200))).await;
    model(&upstream, "detector", "v1", bytes(20_000, 1)).await;
    let v2 = bytes(300_000, 2);
    model(&upstream, "detector", "v2", v2.clone()).await;
    service(
        &upstream,
        "small",
        2.0,
        json!([{ "name": "detector", "version": "v1" }]),
    )
    .await;
    set_alias(&upstream, "production", Some("v1")).await;
    let site = mirror(dir, &upstream.url(""), |_| {}).await;
    wait_following(&site).await;
    assert_eq!(site.get("/model/detector/v2").await.status(), 404);
    (upstream, site, v2)
}

/// Starts rolling `production` out to v2 upstream; its id.
async fn start_rollout_to_v2(upstream: &TestApp) -> String {
    let started = upstream
        .ok(
            r#"mutation { startRollout(input: {model: "detector", alias: "production", version: "v2", steps: [50],
                stepSeconds: 1, gate: {maxErrorRate: 0.1, maxP99Ratio: 2, minReports: 1}}) { id state } }"#,
            json!({}),
        )
        .await;
    assert_eq!(started["startRollout"]["state"], "RUNNING");
    started["startRollout"]["id"].as_str().unwrap().to_string()
}

/// The version `production` of `detector` names on `app` (what devices that give no id get).
async fn production(app: &TestApp) -> Value {
    app.ok(
        r#"{ model(name: "detector", alias: "production") { version } }"#,
        json!({}),
    )
    .await["model"]["version"]
        .clone()
}

/// The mirror fetches a rollout's target as soon as it starts upstream, keeps serving the alias's stable version
/// while it runs, and follows the alias at the end with nothing more to download.
#[tokio::test]
async fn a_mirror_holds_a_rollouts_target_before_the_alias_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, site, v2) = rollout_site(dir.path()).await;
    let before = fetched_bytes(&site).await;
    let started = Instant::now();
    let id = start_rollout_to_v2(&upstream).await;

    wait_served(&site, "/model/detector/v2", &v2).await;
    eprintln!(
        "the mirror held the rollout's target {} ms after startRollout",
        started.elapsed().as_millis()
    );
    wait_following(&site).await;
    assert_eq!(status(&site).await["pendingFiles"], 0);
    assert_eq!(production(&site).await, "v1", "the alias waits for the end");
    let prefetched = fetched_bytes(&site).await;
    assert!(
        prefetched >= before + v2.len() as u64,
        "{before} -> {prefetched}"
    );

    // Devices report upstream on whatever version their cohort gives them, until the rollout completes.
    let devices = ["edge-0", "edge-1", "edge-2", "edge-3"];
    let completed = eventually(WAIT, async || {
        for device in devices {
            let response = upstream
                .get(&format!("/model/detector/@production?device={device}"))
                .await;
            let version = response
                .headers()
                .get("x-model-version")
                .map_or("v1".to_string(), |v| v.to_str().unwrap().to_string());
            let body = json!({
                "device": serde_json::from_str::<Value>(REPORTING_DEVICE).unwrap(),
                "running": [{"kind": "model", "name": "detector", "version": version}],
                "health": {"requests": 100, "errors": 0, "p99Ms": 20.0},
            });
            let sent = upstream
                .client
                .post(upstream.url(&format!("/devices/{device}/report")))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(sent.status(), 200);
        }
        let state = upstream
            .ok(
                "query($id: ID!) { rollout(id: $id) { state applied } }",
                json!({ "id": id }),
            )
            .await;
        // Ended, and applied to the alias.
        state["rollout"]["state"] == "COMPLETED" && state["rollout"]["applied"] == true
    })
    .await;
    assert!(completed, "the rollout never completed upstream");
    assert_eq!(production(&upstream).await, "v2");

    assert!(
        eventually(WAIT, async || production(&site).await == "v2").await,
        "the mirror's alias follows the upstream's"
    );
    assert_eq!(aliased(&site, "production").await.as_deref(), Some(&v2[..]));
    wait_following(&site).await;
    assert_eq!(
        fetched_bytes(&site).await,
        prefetched,
        "the alias moved at the site with no download"
    );
    // v1 is still needed by the service; v2 stays while the alias names it.
    assert!(download(&site, "/model/detector/v1").await.is_some());
    let s = status(&site).await;
    assert_eq!(s["lastError"], Value::Null, "{s:#}");
}

/// A full sync fetches a running rollout's target too; an aborted rollout's target leaves the mirror again when
/// nothing else keeps it.
#[tokio::test]
async fn an_aborted_rollout_lets_the_mirror_drop_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, site, v2) = rollout_site(dir.path()).await;
    // A second site keeps v2 as an extra.
    let other_dir = tempfile::tempdir().unwrap();
    let other = mirror(other_dir.path(), &upstream.url(""), |m| {
        m.include = vec![parse_include("model:detector/v2").unwrap()]
    })
    .await;
    wait_following(&other).await;
    let id = start_rollout_to_v2(&upstream).await;
    wait_served(&site, "/model/detector/v2", &v2).await;
    // A site whose first sync comes while the rollout runs gets the target in that sync.
    let late_dir = tempfile::tempdir().unwrap();
    let late = mirror(late_dir.path(), &upstream.url(""), |_| {}).await;
    assert!(eventually(WAIT, async || late.get("/readyz").await.status() == 200).await);
    assert_eq!(
        download(&late, "/model/detector/v2").await.as_deref(),
        Some(&v2[..])
    );
    assert_eq!(production(&late).await, "v1");

    let aborted = upstream
        .ok(
            "mutation($id: ID!) { abortRollout(id: $id) { state } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(aborted["abortRollout"]["state"], "ABORTED");
    assert!(
        eventually(WAIT, async || site.get("/model/detector/v2").await.status()
            == 404)
        .await,
        "the aborted target is dropped"
    );
    assert_eq!(production(&site).await, "v1");
    assert!(download(&site, "/model/detector/v1").await.is_some());
    assert!(
        eventually(WAIT, async || late.get("/model/detector/v2").await.status()
            == 404)
        .await
    );

    // Kept by something else (an extra) at the other site, it stays there once the abort is applied.
    let head = upstream.ok("{ lastSequence }", json!({})).await["lastSequence"].clone();
    assert!(
        eventually(WAIT, async || status(&other).await["lastSequence"] == head).await,
        "the other site never applied the upstream's feed"
    );
    assert_eq!(
        download(&other, "/model/detector/v2").await.as_deref(),
        Some(&v2[..])
    );
    let s = status(&site).await;
    assert_eq!(s["lastError"], Value::Null, "{s:#}");
}
