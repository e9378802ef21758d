//! The contract suite on the embedded store, plus what only the embedded store can show: its files on disk.

mod common;
mod contract;

use std::future::Future;
use std::pin::Pin;

use common::{Config, TestApp, test_config};

fn start(config: Config) -> Pin<Box<dyn Future<Output = TestApp> + Send>> {
    Box::pin(common::embedded(config))
}

contract_suite!(start);

use std::path::{Path, PathBuf};

use component_repository::store::embedded::EmbeddedStore;
use serde_json::{Value, json};

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn blobs(app: &TestApp) -> Vec<PathBuf> {
    files_under(&app.data_dir.as_ref().unwrap().join("blobs"))
}

fn staged(app: &TestApp) -> Vec<PathBuf> {
    files_under(&app.data_dir.as_ref().unwrap().join("tmp"))
}

/// Uploads `bytes` as service `id`'s file; returns the HTTP status and the GraphQL response.
async fn upload_service(app: &TestApp, id: &str, bytes: Vec<u8>) -> (u16, Value) {
    let response = app
        .upload(
            &format!(
                "mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ file {{ sha256 }} }} }}"
            ),
            json!({}),
            bytes,
            "f.zip",
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Uploads `bytes` as service `id`'s file, which must succeed.
async fn upload_ok(app: &TestApp, id: &str, bytes: Vec<u8>) {
    let sha256 = common::sha256_hex(&bytes);
    let (status, body) = upload_service(app, id, bytes).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["uploadServiceFile"]["file"]["sha256"], sha256,
        "{body}"
    );
}

#[tokio::test]
async fn identical_bytes_are_stored_once_and_reclaimed_when_unused() {
    let app = common::embedded(test_config()).await;
    for id in ["a", "b"] {
        app.ok(
            &format!("mutation {{ createService(input: {{id: \"{id}\"}}) {{ id }} }}"),
            json!({}),
        )
        .await;
    }
    let shared = common::bytes(4096, 1);
    upload_ok(&app, "a", shared.clone()).await;
    upload_ok(&app, "b", shared.clone()).await;
    let stored = blobs(&app);
    assert_eq!(stored.len(), 1, "one blob for identical bytes");
    assert!(stored[0].ends_with(common::sha256_hex(&shared)));

    // Replacing a's file keeps the shared blob for b and adds a's new one.
    upload_ok(&app, "a", common::bytes(10, 2)).await;
    assert_eq!(blobs(&app).len(), 2);
    // Replacing b's file frees the shared blob.
    upload_ok(&app, "b", common::bytes(10, 2)).await;
    assert_eq!(
        blobs(&app).len(),
        1,
        "the old blob is removed once nothing refers to it"
    );
    app.ok("mutation { deleteService(id: \"a\") }", json!({}))
        .await;
    assert_eq!(blobs(&app).len(), 1, "b still uses it");
    app.ok("mutation { deleteService(id: \"b\") }", json!({}))
        .await;
    assert!(blobs(&app).is_empty());
    assert!(staged(&app).is_empty());
}

#[tokio::test]
async fn refused_uploads_leave_nothing_behind() {
    let app = common::embedded(common::config_with(|c| c.uploads.max_size = 1000)).await;
    app.create_service("svc").await;
    let (status, body) = upload_service(&app, "svc", common::bytes(5000, 3)).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = upload_service(&app, "missing", common::bytes(500, 4)).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (200, Some("NOT_FOUND")),
        "GraphQL answers 200 with the error in the body: {body}"
    );
    assert!(blobs(&app).is_empty(), "{:?}", blobs(&app));
    assert!(staged(&app).is_empty(), "{:?}", staged(&app));
}

#[tokio::test]
async fn start_up_removes_interrupted_uploads_and_unreferenced_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let kept = common::bytes(2048, 5);
    let app = TestApp::start(
        std::sync::Arc::new(EmbeddedStore::open(&data_dir).await.unwrap()),
        tempfile::tempdir().unwrap(),
        Some(data_dir.clone()),
        test_config(),
    )
    .await;
    app.create_service("svc").await;
    upload_ok(&app, "svc", kept.clone()).await;
    app.stop().await;
    // What a crash can leave: a half-written upload, and a blob renamed into place whose metadata never committed.
    std::fs::write(data_dir.join("tmp/upload-interrupted"), b"partial").unwrap();
    let orphan = "ab".repeat(32);
    std::fs::create_dir_all(data_dir.join("blobs/ab")).unwrap();
    std::fs::write(data_dir.join("blobs/ab").join(&orphan), b"orphan").unwrap();

    let store = common::reopen(&data_dir).await;
    let app = TestApp::start(
        std::sync::Arc::new(store),
        dir,
        Some(data_dir.clone()),
        test_config(),
    )
    .await;
    assert!(staged(&app).is_empty());
    let remaining = blobs(&app);
    assert_eq!(remaining.len(), 1);
    assert!(remaining[0].ends_with(common::sha256_hex(&kept)));
    let downloaded = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(
        downloaded.as_ref(),
        kept.as_slice(),
        "referenced files survive the clean-up"
    );
}

/// A delivery that kept failing is still pending after a restart, and is sent once the receiver is back.
#[tokio::test]
async fn pending_webhook_deliveries_survive_a_restart() {
    use contract::{Receiver, allow_private, create_webhook, verified};
    use std::time::Duration;
    let app = common::embedded(allow_private()).await;
    let receiver = Receiver::start(usize::MAX).await;
    create_webhook(&app, &receiver.url, "restart-secret", json!(null)).await;
    app.create_service("waiting").await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    // The failed attempt is recorded just after the receiver answered.
    let delivery = common::wait_for(Duration::from_secs(10), async || {
        let pending = app
            .ok(
                "{ webhooks { deliveries { status attempts lastStatus } } }",
                json!({}),
            )
            .await;
        let delivery = pending["webhooks"][0]["deliveries"][0].clone();
        match delivery["lastStatus"] == 500 {
            true => Ok(delivery),
            false => Err(format!("{pending:#}")),
        }
    })
    .await;
    assert_eq!(delivery["status"], "PENDING");
    let dir = app.stop_keeping_data().await;
    let failed_attempts = receiver.received().len();
    receiver.recover();

    let app = common::embedded_in_with(dir.path(), allow_private()).await;
    let received = receiver
        .wait_for(failed_attempts + 1, Duration::from_secs(30))
        .await;
    let last = received.last().unwrap();
    assert_eq!(verified(last, "restart-secret")["id"], "waiting");
    let delivery = common::wait_for(Duration::from_secs(10), async || {
        let listed = app
            .ok("{ webhooks { deliveries { status attempts } } }", json!({}))
            .await;
        let delivery = listed["webhooks"][0]["deliveries"][0].clone();
        match delivery["status"] == "DELIVERED" {
            true => Ok(delivery),
            false => Err(format!("{listed:#}")),
        }
    })
    .await;
    assert_eq!(
        delivery["attempts"],
        failed_attempts as u64 + 1,
        "attempts carry over"
    );
    // The positive signal: a later event arrives, and deliveries go in order, so a second send would be before it.
    app.create_service("after").await;
    let received = receiver
        .wait_for(failed_attempts + 2, Duration::from_secs(30))
        .await;
    let ids: Vec<Value> = received[failed_attempts..]
        .iter()
        .map(|r| verified(r, "restart-secret")["id"].clone())
        .collect();
    assert_eq!(ids, ["waiting", "after"], "sent once after the restart");
}

/// Progress past filtered-out events is saved lazily, so a restart looks at them again; but it neither sends a
/// delivered event twice (not even when the cursor was left before it, as a crash between the delivery's record
/// and the cursor's can leave it) nor skips one the webhook wants.
#[tokio::test]
async fn a_restart_re_examines_filtered_events_but_never_resends_a_delivery() {
    use component_repository::store::Store;
    use contract::{EXAMINED, Receiver, create_webhook, metric, verified};
    use std::time::Duration;
    let options = || {
        contract::allow_private_with(|c| {
            c.webhooks.cursor_save_interval = Duration::from_secs(3600)
        })
    };
    let create_model = async |app: &TestApp, version: &str| {
        app.ok(
            "mutation($v: String!) { createModel(input: {name: \"m\", version: $v, library: \"l\"}) { name } }",
            json!({ "v": version }),
        )
        .await;
    };
    let cursor = async |app: &TestApp| {
        app.ok("{ webhooks { cursor } }", json!({})).await["webhooks"][0]["cursor"].clone()
    };
    let app = common::embedded(options()).await;
    let receiver = Receiver::start(0).await;
    create_webhook(&app, &receiver.url, "restarts", json!(["MODEL"])).await;
    create_model(&app, "1").await;
    let first = verified(
        &receiver.wait_for(1, Duration::from_secs(30)).await[0],
        "restarts",
    );
    assert!(
        common::eventually(Duration::from_secs(10), async || cursor(&app).await
            == first["sequence"])
        .await
    );
    for id in ["a", "b", "c"] {
        app.create_service(id).await;
    }
    assert!(
        common::eventually(Duration::from_secs(30), async || metric(&app, EXAMINED)
            .await
            >= 4.0)
        .await
    );
    assert_eq!(
        cursor(&app).await,
        first["sequence"],
        "filtered-out events saved nothing"
    );
    let dir = app.stop_keeping_data().await;

    // The cursor left just before the delivered event, as if the server died between the two writes.
    let data_dir = dir.path().join("data");
    {
        let store = common::reopen(&data_dir).await;
        let mut webhook = store.webhooks().list_webhooks().await.unwrap().remove(0);
        webhook.cursor = first["sequence"].as_u64().unwrap() - 1;
        store.webhooks().insert_webhook(&webhook).await.unwrap();
    }
    // The store closes once its catalogue loader is done with it.
    let mut reopened = None;
    assert!(
        common::eventually(Duration::from_secs(10), async || {
            reopened = EmbeddedStore::open(&data_dir).await.ok();
            reopened.is_some()
        })
        .await
    );
    let app = TestApp::start(
        std::sync::Arc::new(reopened.unwrap()),
        dir,
        Some(data_dir.clone()),
        options(),
    )
    .await;
    // The positive signal: the worker has been through the delivered event and the three filtered-out ones.
    assert!(
        common::eventually(Duration::from_secs(30), async || metric(&app, EXAMINED)
            .await
            >= 4.0)
        .await,
        "examined {}",
        metric(&app, EXAMINED).await
    );
    create_model(&app, "2").await;
    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    let second = verified(&received[1], "restarts");
    assert_eq!(second["version"], "2", "{second:#}");
    assert!(
        common::eventually(Duration::from_secs(10), async || cursor(&app).await
            == second["sequence"])
        .await
    );
    assert_eq!(
        receiver.received().len(),
        2,
        "the first model was not sent again"
    );
}

/// A blob being attached is never reclaimed by a concurrent delete of another component with the same bytes:
/// every upload that answered is downloadable at once, and afterwards the blobs on disk are exactly those in use.
#[tokio::test]
async fn a_blob_being_attached_survives_a_concurrent_delete_of_the_same_bytes() {
    let app = std::sync::Arc::new(common::embedded(test_config()).await);
    let (shared, other) = (common::bytes(30_000, 21), common::bytes(20_000, 22));
    app.create_service("keeper").await;
    let keeper = {
        let (app, shared, other) = (app.clone(), shared.clone(), other.clone());
        tokio::spawn(async move {
            for round in 0..40 {
                // Alternating, so the shared bytes keep losing and regaining this component's reference.
                let data = if round % 2 == 0 { &shared } else { &other };
                upload_ok(&app, "keeper", data.clone()).await;
                let served = app.get("/service/keeper").await;
                assert_eq!(served.status(), 200, "round {round}");
                let served = served.bytes().await.unwrap();
                assert_eq!(
                    common::sha256_hex(&served),
                    common::sha256_hex(data),
                    "round {round}: the attached file is whole"
                );
            }
        })
    };
    let churner = {
        let (app, shared) = (app.clone(), shared.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                app.create_service("churn").await;
                upload_ok(&app, "churn", shared.clone()).await;
                app.ok("mutation { deleteService(id: \"churn\") }", json!({}))
                    .await;
            }
        })
    };
    keeper.await.unwrap();
    churner.await.unwrap();
    let stored = blobs(&app);
    assert_eq!(
        stored.len(),
        1,
        "only the keeper's file is left: {stored:?}"
    );
    assert!(stored[0].ends_with(common::sha256_hex(&other)));
    assert!(staged(&app).is_empty(), "{:?}", staged(&app));
}

/// Writes committed together answer each on its own: a refused create beside successful ones changes nothing
/// else, every success has its event, and all of it is on disk after a restart.
#[tokio::test]
async fn concurrent_writes_are_answered_one_by_one_and_all_persist() {
    let app = std::sync::Arc::new(common::embedded(test_config()).await);
    let mut tasks = Vec::new();
    for n in 0..120 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // Each id is created three times at once; `nobody` is updated though it does not exist.
            let query = if n % 10 == 9 {
                "mutation { updateService(id: \"nobody\", input: {description: \"x\"}) { id } }"
                    .to_string()
            } else {
                format!(
                    "mutation {{ createService(input: {{id: \"svc-{}\"}}) {{ id }} }}",
                    n / 3
                )
            };
            let body = app.gql(&query, json!({})).await;
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .map(str::to_owned)
        }));
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        let code = task.await.unwrap().unwrap_or_else(|| "ok".into());
        *codes.entry(code).or_default() += 1;
    }
    let ids: std::collections::BTreeSet<usize> =
        (0..120).filter(|n| n % 10 != 9).map(|n| n / 3).collect();
    let creates = (0..120).filter(|n| n % 10 != 9).count();
    assert_eq!(codes.get("ok"), Some(&ids.len()), "{codes:?}");
    assert_eq!(
        codes.get("ALREADY_EXISTS"),
        Some(&(creates - ids.len())),
        "{codes:?}"
    );
    assert_eq!(codes.get("NOT_FOUND"), Some(&12), "{codes:?}");

    let listed = app
        .ok("{ services(first: 100) { totalCount } }", json!({}))
        .await;
    assert_eq!(listed["services"]["totalCount"], ids.len());
    let feed = app
        .ok(
            "{ events(first: 1000) { nodes { sequence type id } } }",
            json!({}),
        )
        .await;
    let events = feed["events"]["nodes"].as_array().unwrap().clone();
    assert_eq!(
        events.len(),
        ids.len(),
        "one event per create that succeeded"
    );
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| {
            e["sequence"]
                .as_str()
                .map_or_else(|| e["sequence"].as_u64().unwrap(), |s| s.parse().unwrap())
        })
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");

    let app = std::sync::Arc::into_inner(app).unwrap();
    let dir = app.stop_keeping_data().await;
    let app = common::embedded_in(dir.path()).await;
    let listed = app
        .ok("{ services(first: 100) { totalCount } }", json!({}))
        .await;
    assert_eq!(
        listed["services"]["totalCount"],
        ids.len(),
        "committed means on disk"
    );
}

/// A rollout's state is on disk: after a restart the server knows it, keeps the cohorts and finishes it.
#[tokio::test]
async fn a_rollout_survives_a_restart() {
    let app = common::embedded(contract::rollout_config()).await;
    let handover = contract::start_rollout_to_hand_over(&app).await;
    let dir = app.stop_keeping_data().await;
    let app = common::embedded_in_with(dir.path(), contract::rollout_config()).await;
    contract::finish_handed_over_rollout(&app, &handover).await;
}
