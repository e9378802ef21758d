//! The contract suite on the MongoDB backend, plus what only this backend can show: the original service's layout,
//! GridFS housekeeping and a database that goes away. See `common::mongo` for which server the tests use.

mod common;
mod contract;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use common::mongo::{self, DropDatabases};
use common::{Config, TestApp, test_config};

fn start(config: Config) -> Pin<Box<dyn Future<Output = TestApp> + Send>> {
    Box::pin(async move {
        let target = mongo::target().expect("checked by the skip rule");
        let (store, databases) = mongo::store(target).await;
        let mut app =
            TestApp::start(Arc::new(store), tempfile::tempdir().unwrap(), None, config).await;
        app.probe = Some(Arc::new(mongo::MongoProbe::new(&databases).await));
        app.guard = Some(Box::new(DropDatabases(databases)));
        app
    })
}

/// What the wire server used in CI does not do as MongoDB does, by test.
const WIRE_SERVER_GAPS: &[(&str, &str)] = &[
    (
        "refuses_duplicate_keys",
        "nx-27017 ignores unique indexes on a field named `id` (its SQLite tables use an `id` column), so \
         duplicate ids are not refused there; MongoDB enforces the index",
    ),
    (
        "concurrent_creates_have_one_winner",
        "nx-27017 ignores unique indexes on a field named `id`, so concurrent creates of one id all succeed there",
    ),
];

/// Why a test cannot run here, if it cannot.
fn skip(test: &str) -> Option<String> {
    match mongo::target() {
        Err(reason) => Some(reason),
        Ok(target) if target.is_wire() => WIRE_SERVER_GAPS
            .iter()
            .find(|(name, _)| *name == test)
            .map(|(_, reason)| reason.to_string()),
        Ok(_) => None,
    }
}

contract_suite!(start, skip);

use std::time::{Duration, Instant};

use component_repository::store::Store;
use component_repository::store::mongodb::MongoStore;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use serde_json::json;

use common::{bytes, sha256_hex};

/// The server for a backend-specific test, or `None` after saying loudly why the test cannot run.
fn require_target(test: &str) -> Option<&'static mongo::Target> {
    match mongo::target() {
        Ok(target) => Some(target),
        Err(reason) => {
            common::report_skip(test, &reason);
            None
        }
    }
}

/// A raw client on the test's databases, to look at (or prepare) what is stored.
struct Raw {
    meta: mongodb::Database,
    grid: mongodb::Database,
}

impl Raw {
    async fn new(config: &component_repository::store::mongodb::MongoConfig) -> Raw {
        let client = mongodb::Client::with_uri_str(&config.uri).await.unwrap();
        Raw {
            meta: client.database(&config.database),
            grid: client.database(&config.grid_database),
        }
    }

    fn files(&self) -> mongodb::Collection<Document> {
        self.grid.collection("fs.files")
    }

    fn chunks(&self) -> mongodb::Collection<Document> {
        self.grid.collection("fs.chunks")
    }

    async fn count(&self, collection: mongodb::Collection<Document>) -> u64 {
        count_where(&collection, doc! {}).await
    }

    /// Writes a file in the GridFS layout, as the original service's driver did, with `chunk_size` chunks.
    async fn put_grid_file(&self, id: ObjectId, filename: &str, data: &[u8], uploaded: DateTime) {
        let chunk_size = 1000;
        for (n, chunk) in data.chunks(chunk_size).enumerate() {
            self.chunks()
                .insert_one(doc! {
                    "files_id": id,
                    "n": n as i32,
                    "data": Binary { subtype: BinarySubtype::Generic, bytes: chunk.to_vec() },
                })
                .await
                .unwrap();
        }
        self.files()
            .insert_one(doc! {
                "_id": id,
                "length": data.len() as i64,
                "chunkSize": chunk_size as i32,
                "uploadDate": uploaded,
                "filename": filename,
            })
            .await
            .unwrap();
    }
}

/// A server on databases that `prepare` fills first, as another program left them.
async fn start_on_prepared<F, Fut>(target: &mongo::Target, prepare: F) -> (TestApp, Raw, MongoStore)
where
    F: FnOnce(Raw) -> Fut,
    Fut: Future<Output = Raw>,
{
    let config = mongo::config(target);
    let raw = prepare(Raw::new(&config).await).await;
    let store = MongoStore::connect(&config).await.unwrap();
    let mut app = TestApp::start(
        Arc::new(MongoStore::connect(&config).await.unwrap()),
        tempfile::tempdir().unwrap(),
        None,
        test_config(),
    )
    .await;
    app.guard = Some(Box::new(DropDatabases(config)));
    (app, raw, store)
}

/// Writes what the original service left in MongoDB: a model and a transformation with files in GridFS, and a
/// service without one.
async fn write_original_database(
    raw: Raw,
    model_bytes: Vec<u8>,
    transformation_bytes: Vec<u8>,
) -> Raw {
    let model_file = ObjectId::new();
    let transformation_file = ObjectId::new();
    let uploaded = DateTime::from_millis(1_700_000_000_000);
    raw.put_grid_file(
        model_file,
        "model/fall-detection/pilot-2-1",
        &model_bytes,
        uploaded,
    )
    .await;
    raw.put_grid_file(
        transformation_file,
        "transformation/custom.img_transpose",
        &transformation_bytes,
        uploaded,
    )
    .await;
    // Exactly the documents the original wrote: no dates, hashes or revisions of ours, maps left null,
    // numbers as integers.
    raw.meta
        .collection::<Document>("models")
        .insert_one(doc! {
            "model_name": "fall-detection", "model_version": "pilot-2-1",
            "meta": { "library": "keras", "description": "A CNN" },
            "model_id": model_file.to_hex(),
        })
        .await
        .unwrap();
    raw.meta
        .collection::<Document>("transformations")
        .insert_one(doc! {
            "id": "custom.img_transpose", "description": "transpose",
            "parameter_types": { "axes": "list" }, "default_values": { "axes": [1, 0, 2] },
            "outputs": ["image"],
            "needs": { "storage": 1, "RAM": 2, "GPU": false,
                       "preinstalled_libraries": { "numpy": "1.26.4" }, "available_models": null },
            "storage_id": transformation_file.to_hex(),
        })
        .await
        .unwrap();
    raw.meta
        .collection::<Document>("services")
        .insert_one(
            doc! { "id": "svc", "description": "no file yet", "needs": null, "storage_id": null },
        )
        .await
        .unwrap();
    raw
}

#[tokio::test]
async fn serves_a_database_written_by_the_original_service() {
    let Some(target) = require_target("serves_a_database_written_by_the_original_service") else {
        return;
    };
    let model_bytes = bytes(2_500, 7);
    let transformation_bytes = bytes(999, 8);
    let (app, raw, store) = start_on_prepared(target, |raw| {
        write_original_database(raw, model_bytes.clone(), transformation_bytes.clone())
    })
    .await;

    let meta: serde_json::Value = app
        .get("/model/meta?model_name=fall-detection&model_version=pilot-2-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["meta"]["library"], "keras");
    let download = app.get("/model/fall-detection/pilot-2-1").await;
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.bytes().await.unwrap().as_ref(),
        model_bytes.as_slice()
    );
    let range = app
        .get_with(
            "/transformation/custom.img_transpose",
            &[("range", "bytes=990-")],
        )
        .await;
    assert_eq!(range.status(), 206);
    assert_eq!(
        range.bytes().await.unwrap().as_ref(),
        &transformation_bytes[990..]
    );

    let listed = app
        .ok(
            "{ transformations(filter: {needs: {maxRam: 2, libraries: [{name: \"numpy\", version: \"1.26\"}]}}) \
             { totalCount edges { node { id defaultValues needs { storage ram gpu } file { size } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["transformations"]["totalCount"], 0,
        "1.26 != 1.26.4 as an exact pin"
    );
    let listed = app
        .ok(
            "{ transformations(filter: {needs: {maxRam: 2}}) \
             { totalCount edges { node { id defaultValues needs { storage ram gpu } file { size sha256 } } } } }",
            json!({}),
        )
        .await;
    let node = &listed["transformations"]["edges"][0]["node"];
    assert_eq!(node["id"], "custom.img_transpose");
    assert_eq!(node["defaultValues"]["axes"], json!([1, 0, 2]));
    assert_eq!(
        node["needs"],
        json!({"storage": 1.0, "ram": 2.0, "gpu": false})
    );
    assert_eq!(node["file"]["size"], 999);
    assert_eq!(
        node["file"]["sha256"],
        serde_json::Value::Null,
        "not hashed yet"
    );
    let svc = app
        .ok("{ service(id: \"svc\") { file { size } } }", json!({}))
        .await;
    assert_eq!(svc["service"]["file"], serde_json::Value::Null);

    // The original recorded no hashes: the backfill computes them, and downloads then carry them as ETags.
    assert_eq!(store.backfill_legacy_hashes().await.unwrap(), 2);
    let hashed = app
        .ok(
            "{ model(name: \"fall-detection\", version: \"pilot-2-1\") { file { sha256 size } } }",
            json!({}),
        )
        .await;
    assert_eq!(hashed["model"]["file"]["sha256"], sha256_hex(&model_bytes));
    let download = app.get("/model/fall-detection/pilot-2-1").await;
    assert_eq!(
        download.headers()["etag"],
        format!("\"{}\"", sha256_hex(&model_bytes)).as_str()
    );
    assert_eq!(
        store.backfill_legacy_hashes().await.unwrap(),
        0,
        "done once"
    );
    drop(raw);
}

#[tokio::test]
async fn what_we_write_keeps_the_original_layout() {
    let Some(target) = require_target("what_we_write_keeps_the_original_layout") else {
        return;
    };
    let (app, raw, _store) = start_on_prepared(target, |raw| async move { raw }).await;
    app.ok(
        "mutation { createService(input: {id: \"inference.svc\", needs: {ram: 1.5, gpu: true, \
         preinstalledLibraries: [{name: \"grpcio\", version: \">=1.50\"}]}}) { id } \
         createModel(input: {name: \"fall-detection\", version: \"pilot-2-1\", library: \"keras\"}) { name } }",
        json!({}),
    )
    .await;
    let data = bytes(600_000, 3);
    let upload = app
        .upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"inference.svc\", file: $file) { id } }",
            json!({}),
            data.clone(),
            "svc.zip",
        )
        .await;
    assert_eq!(upload.status(), 200);

    let service = raw
        .meta
        .collection::<Document>("services")
        .find_one(doc! { "id": "inference.svc" })
        .await
        .unwrap()
        .unwrap();
    let needs = service.get_document("needs").unwrap();
    assert_eq!(needs.get_f64("RAM").unwrap(), 1.5);
    assert!(needs.get_bool("GPU").unwrap());
    assert_eq!(
        needs
            .get_document("preinstalled_libraries")
            .unwrap()
            .get_str("grpcio")
            .unwrap(),
        ">=1.50"
    );
    let storage_id = ObjectId::parse_str(service.get_str("storage_id").unwrap()).unwrap();
    let file = raw
        .files()
        .find_one(doc! { "_id": storage_id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(file.get_str("filename").unwrap(), "service/inference.svc");
    assert_eq!(mongodb_integer(file.get("length")), 600_000);
    assert_eq!(
        file.get_document("metadata")
            .unwrap()
            .get_str("sha256")
            .unwrap(),
        sha256_hex(&data)
    );
    let chunks = count_where(&raw.chunks(), doc! { "files_id": storage_id }).await;
    assert_eq!(
        chunks,
        600_000_u64.div_ceil(255 * 1024),
        "GridFS chunks of 255 KiB"
    );

    let model = raw
        .meta
        .collection::<Document>("models")
        .find_one(doc! { "model_name": "fall-detection" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        model
            .get_document("meta")
            .unwrap()
            .get_str("library")
            .unwrap(),
        "keras"
    );
    assert_eq!(model.get("model_id"), Some(&Bson::Null), "no file yet");
}

async fn all_files(raw: &Raw) -> Vec<Document> {
    use futures_util::TryStreamExt;
    raw.files()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Counts by reading the matching documents (nx-27017 cannot `count`, or project, collections whose names hold a
/// dot).
async fn count_where(collection: &mongodb::Collection<Document>, filter: Document) -> u64 {
    use futures_util::TryStreamExt;
    let found: Vec<Document> = collection
        .find(filter)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    found.len() as u64
}

fn mongodb_integer(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        other => panic!("not an integer: {other:?}"),
    }
}

const CHUNK_LISTING_GAP: &str = "nx-27017 emulates GridFS: it returns chunks only when queried by files_id and \
    invents a files document for chunks inserted without one, so chunks that no file owns cannot be made or \
    listed there; MongoDB can";

/// Whether the server lists chunks as MongoDB does; when not, says loudly that `check` is skipped.
fn all_chunks_listable(target: &mongo::Target, check: &str) -> bool {
    if target.is_wire() {
        common::report_skip(check, CHUNK_LISTING_GAP);
    }
    !target.is_wire()
}

/// Every chunk in the bucket, where the server can list them (see [`CHUNK_LISTING_GAP`]).
async fn all_chunks(raw: &Raw, target: &mongo::Target, check: &str) -> Option<u64> {
    if !all_chunks_listable(target, check) {
        return None;
    }
    Some(raw.count(raw.chunks()).await)
}

/// The GridFS file a service's metadata refers to.
async fn storage_id(raw: &Raw, id: &str) -> Option<ObjectId> {
    let service = raw
        .meta
        .collection::<Document>("services")
        .find_one(doc! { "id": id })
        .await
        .unwrap()?;
    ObjectId::parse_str(service.get_str("storage_id").ok()?).ok()
}

/// Replaced and deleted files stay readable (downloads in flight finish; see the contract suite) and go once they
/// have been superseded for longer than the grace period, whatever their age.
#[tokio::test]
async fn replaced_and_deleted_files_go_after_the_grace_period() {
    let test = "replaced_and_deleted_files_go_after_the_grace_period";
    let Some(target) = require_target(test) else {
        return;
    };
    let (app, raw, store) = start_on_prepared(target, |raw| async move { raw }).await;
    app.create_service("svc").await;
    let upload = |data: Vec<u8>| {
        app.upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
            json!({}),
            data,
            "f.zip",
        )
    };
    assert_eq!(upload(bytes(300_000, 1)).await.status(), 200);
    let first = storage_id(&raw, "svc").await.unwrap();
    let second = bytes(400_000, 2);
    assert_eq!(upload(second.clone()).await.status(), 200);
    let current = storage_id(&raw, "svc").await.unwrap();
    assert_ne!(first, current);
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": first }).await,
        2,
        "the replaced file stays for downloads in flight"
    );
    let download = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(download.as_ref(), second.as_slice());

    // An old upload replaced just now is young as far as gc is concerned. (nx-27017 ignores the change of
    // `uploadDate`, so there the file is young anyway; MongoDB shows the difference.)
    let two_days_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 48 * 3600 * 1000);
    raw.files()
        .update_one(
            doc! { "_id": first },
            doc! { "$set": { "uploadDate": two_days_ago } },
        )
        .await
        .unwrap();
    let report = store
        .blobs()
        .collect_garbage(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.files, 0, "superseded within the grace period");
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": first }).await,
        2
    );
    let report = store.blobs().collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.files, 1);
    assert_eq!(raw.count(raw.files()).await, 1, "only the current file");
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": first }).await,
        0,
        "gc removed the replaced file's chunks"
    );
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": current }).await,
        2
    );

    // A refused upload leaves nothing, not even chunks.
    let oversize = upload(bytes(65 * 1024 * 1024, 3)).await;
    assert_eq!(oversize.status(), 413);
    assert_eq!(raw.count(raw.files()).await, 1);
    if let Some(chunks) = all_chunks(&raw, target, &format!("{test}_refused_upload_chunks")).await {
        assert_eq!(chunks, 2);
    }

    app.ok("mutation { deleteService(id: \"svc\") }", json!({}))
        .await;
    assert_eq!(app.get("/service/svc").await.status(), 404);
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": current }).await,
        2,
        "a deleted component's file stays for downloads in flight"
    );
    let report = store.blobs().collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.files, 1);
    assert_eq!(raw.count(raw.files()).await, 0);
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": current }).await,
        0
    );
}

#[tokio::test]
async fn gc_removes_old_unreferenced_files_only() {
    let test = "gc_removes_old_unreferenced_files_only";
    let Some(target) = require_target(test) else {
        return;
    };
    // nx-27017 invents a files document for chunks inserted without one; the stray-chunk half of this test needs
    // a server that keeps the two collections apart.
    let check_stray_chunks = all_chunks_listable(target, &format!("{test}_stray_chunks"));
    let day_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 25 * 3600 * 1000);
    let old_orphan = ObjectId::new();
    let fresh_orphan = ObjectId::new();
    // The chunks of an upload that never finished, begun a day ago (an ObjectId carries its creation time).
    let mut stray_bytes = ObjectId::new().bytes();
    stray_bytes[..4].copy_from_slice(&((day_ago.timestamp_millis() / 1000) as u32).to_be_bytes());
    let stray = ObjectId::from_bytes(stray_bytes);
    let (app, raw, _store) = start_on_prepared(target, |raw| async move {
        raw.put_grid_file(old_orphan, "staging", &bytes(3_000, 1), day_ago)
            .await;
        raw.put_grid_file(fresh_orphan, "staging", &bytes(3_000, 2), DateTime::now())
            .await;
        if check_stray_chunks {
            let data = Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![1, 2, 3],
            };
            raw.chunks()
                .insert_one(doc! { "files_id": stray, "n": 0, "data": data })
                .await
                .unwrap();
        }
        raw
    })
    .await;
    app.create_service("svc").await;
    app.upload(
        "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
        json!({}),
        bytes(5_000, 3),
        "f.zip",
    )
    .await;
    let files = all_files(&raw).await;
    assert_eq!(files.len(), 3, "{files:?}");

    // The `gc` subcommand, as an operator runs it, with the default grace period of a day.
    let output = std::process::Command::new(common::process::binary())
        .args(["gc", "--store", "mongodb", "--mongodb-uri", target.uri()])
        .args([
            "--mongodb-database",
            raw.meta.name(),
            "--mongodb-grid-database",
            raw.grid.name(),
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let strays = u64::from(check_stray_chunks);
    assert!(
        stdout.contains(&format!(
            "removed 1 unreferenced files and {strays} stray chunks"
        )),
        "{stdout}"
    );
    let remaining: Vec<ObjectId> = all_files(&raw)
        .await
        .iter()
        .map(|d| d.get_object_id("_id").unwrap())
        .collect();
    assert!(!remaining.contains(&old_orphan));
    assert!(
        remaining.contains(&fresh_orphan),
        "younger than the grace period"
    );
    assert_eq!(remaining.len(), 2, "the referenced file stays");
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": stray }).await,
        0
    );
    assert_eq!(
        count_where(&raw.chunks(), doc! { "files_id": fresh_orphan }).await,
        3
    );
    assert_eq!(app.get("/service/svc").await.status(), 200);
}

#[tokio::test]
async fn a_database_that_goes_away_gives_503_and_recovers() {
    let test = "a_database_that_goes_away_gives_503_and_recovers";
    let Some(binary) = mongo::wire_server_binary() else {
        common::report_skip(
            test,
            "needs the nx-27017 wire server to start a database on demand (scripts/test.sh)",
        );
        return;
    };
    let port = mongo::free_port();
    let mut config = mongo::config(&mongo::Target::Wire {
        uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
    });
    config.timeout = Duration::from_secs(1);
    let store = MongoStore::connect(&config)
        .await
        .expect("starts without its database");
    let app = TestApp::start(
        Arc::new(store),
        tempfile::tempdir().unwrap(),
        None,
        test_config(),
    )
    .await;

    let started = Instant::now();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answers within the timeout"
    );
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    let gql = app.gql("{ services { totalCount } }", json!({})).await;
    assert_eq!(
        gql["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{gql}"
    );
    let download = app.get("/service/svc").await;
    assert_eq!(download.status(), 503);
    assert!(download.json::<serde_json::Value>().await.unwrap()["detail"].is_string());

    // The database comes (back): the server notices by itself.
    mongo::start_wire_server_on(binary, port).unwrap();
    assert!(
        common::eventually(Duration::from_secs(30), async || app
            .get("/readyz")
            .await
            .status()
            == 200)
        .await,
        "the server did not recover"
    );
    app.create_service("svc").await;
}

#[tokio::test]
async fn archives_move_between_the_embedded_store_and_mongodb() {
    let Some(target) = require_target("archives_move_between_the_embedded_store_and_mongodb")
    else {
        return;
    };
    use common::archive::{dump_embedded, ok, populated_store, restore_embedded};
    let embedded = populated_store().await;
    let work = tempfile::tempdir().unwrap();
    let from_embedded = work.path().join("embedded.tar");
    dump_embedded(embedded.path(), &from_embedded);

    let config = mongo::config(target);
    let _drop = DropDatabases(config.clone());
    // The same subcommands, on the MongoDB store.
    let on_mongo = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--store",
            "mongodb",
            "--mongodb-uri",
            &config.uri,
            "--mongodb-database",
            &config.database,
            "--mongodb-grid-database",
            &config.grid_database,
        ]);
        ok(&all);
    };
    on_mongo(&["restore", "--in", from_embedded.to_str().unwrap()]);
    {
        let app = replica(&config).await;
        common::archive::assert_variants_and_aliases(&app).await;
        app.stop().await;
    }
    let from_mongo = work.path().join("mongo.tar");
    on_mongo(&["dump", "--out", from_mongo.to_str().unwrap()]);
    assert_eq!(
        common::archive::components_of(&from_embedded),
        common::archive::components_of(&from_mongo)
    );
    let (a, b) = (
        std::fs::read(&from_embedded).unwrap(),
        std::fs::read(&from_mongo).unwrap(),
    );
    assert!(a == b, "MongoDB holds exactly what the embedded store held");

    // And back: into a new embedded store.
    let back = tempfile::tempdir().unwrap();
    restore_embedded(back.path(), &from_mongo);
    let again = work.path().join("again.tar");
    dump_embedded(back.path(), &again);
    assert!(std::fs::read(&again).unwrap() == a);
}

#[tokio::test]
async fn import_copies_a_database_of_the_original_service() {
    let Some(target) = require_target("import_copies_a_database_of_the_original_service") else {
        return;
    };
    let model_bytes = bytes(2_500, 7);
    let transformation_bytes = bytes(999, 8);
    let config = mongo::config(target);
    let _drop = DropDatabases(config.clone());
    let raw = write_original_database(
        Raw::new(&config).await,
        model_bytes.clone(),
        transformation_bytes.clone(),
    )
    .await;

    let embedded = tempfile::tempdir().unwrap();
    common::archive::ok(&[
        "import",
        "--from-mongodb-uri",
        &config.uri,
        "--from-database",
        &config.database,
        "--from-grid-database",
        &config.grid_database,
        "--data-dir",
        &common::archive::data_dir(embedded.path()),
    ]);
    let indexes: Vec<_> = {
        use futures_util::TryStreamExt;
        raw.meta
            .collection::<Document>("services")
            .list_indexes()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(indexes.len(), 1, "the source is only read: {indexes:?}");

    let app = common::embedded_in(embedded.path()).await;
    let model = app.get("/model/fall-detection/pilot-2-1").await;
    assert_eq!(
        model.headers()["etag"],
        format!("\"{}\"", sha256_hex(&model_bytes)).as_str()
    );
    assert_eq!(
        model.bytes().await.unwrap().as_ref(),
        model_bytes.as_slice()
    );
    let data = app
        .ok(
            "{ transformation(id: \"custom.img_transpose\") { needs { ram storage preinstalledLibraries { name version } } \
               file { size sha256 } } service(id: \"svc\") { id file { size } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["transformation"]["needs"]["ram"], 2.0);
    assert_eq!(
        data["transformation"]["file"]["sha256"],
        sha256_hex(&transformation_bytes)
    );
    assert_eq!(data["service"]["file"], serde_json::Value::Null);
}

/// Documents the server received in replies to `find` and `getMore` on one collection, counted from the driver's
/// command monitoring.
#[derive(Clone, Default)]
struct DocumentsRead(
    Arc<std::sync::Mutex<std::collections::HashMap<i32, bool>>>,
    Arc<std::sync::atomic::AtomicU64>,
);

impl DocumentsRead {
    fn handler(
        &self,
        collection: &'static str,
    ) -> mongodb::event::EventHandler<mongodb::event::command::CommandEvent> {
        use mongodb::event::command::CommandEvent;
        let counter = self.clone();
        mongodb::event::EventHandler::callback(move |event| match event {
            CommandEvent::Started(started) => {
                let on_collection = match started.command_name.as_str() {
                    "find" => started.command.get_str("find").ok() == Some(collection),
                    "getMore" => started.command.get_str("collection").ok() == Some(collection),
                    _ => false,
                };
                counter
                    .0
                    .lock()
                    .unwrap()
                    .insert(started.request_id, on_collection);
            }
            CommandEvent::Succeeded(succeeded) => {
                let on_collection = counter.0.lock().unwrap().remove(&succeeded.request_id);
                if on_collection == Some(true) {
                    let cursor = succeeded.reply.get_document("cursor").ok();
                    let batch = cursor.and_then(|c| {
                        c.get_array("firstBatch")
                            .or_else(|_| c.get_array("nextBatch"))
                            .ok()
                    });
                    counter.1.fetch_add(
                        batch.map_or(0, |b| b.len() as u64),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                }
            }
            CommandEvent::Failed(failed) => {
                counter.0.lock().unwrap().remove(&failed.request_id);
            }
            _ => {}
        })
    }

    fn take(&self) -> u64 {
        self.1.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

/// A selective `runnableOn` reads only its candidates: components that need a library (or a model) the device does
/// not have are excluded by the query itself, not read and dropped by the server.
#[tokio::test]
async fn a_selective_runnable_on_reads_only_its_candidates() {
    let Some(target) = require_target("a_selective_runnable_on_reads_only_its_candidates") else {
        return;
    };
    let config = mongo::config(target);
    let read = DocumentsRead::default();
    let store = MongoStore::connect_monitored(&config, read.handler("services"))
        .await
        .unwrap();
    let mut app = TestApp::start(
        Arc::new(store),
        tempfile::tempdir().unwrap(),
        None,
        test_config(),
    )
    .await;
    app.guard = Some(Box::new(DropDatabases(config)));
    let create = "mutation($id: ID!, $needs: NeedsInput!) { createService(input: {id: $id, needs: $needs}) { id } }";
    let lib = |name: &str, version: &str| json!({"preinstalledLibraries": [{"name": name, "version": version}]});
    for i in 0..40 {
        app.ok(
            create,
            json!({"id": format!("torch-{i:02}"), "needs": lib("torch", ">=2")}),
        )
        .await;
    }
    for i in 0..10 {
        app.ok(create, json!({"id": format!("yolo-{i:02}"), "needs": {"availableModels": [{"name": "yolo", "version": "v8"}]}})).await;
    }
    for i in 0..6 {
        app.ok(
            create,
            json!({"id": format!("tf-{i:02}"), "needs": lib("tensorflow", ">=2.12")}),
        )
        .await;
    }
    for i in 0..3 {
        app.ok(
            create,
            json!({"id": format!("tf-old-{i:02}"), "needs": lib("tensorflow", "<2")}),
        )
        .await;
    }
    app.ok(create, json!({"id": "plain", "needs": {}})).await;

    read.take();
    let data = app
        .ok(
            "{ runnableOn(device: {libraries: [{name: \"tensorflow\", version: \"2.13.1\"}]}, kinds: [SERVICE], first: 100) { edges { node { ... on Service { id } } } } }",
            json!({}),
        )
        .await;
    let found: Vec<&str> = data["runnableOn"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        [
            "plain", "tf-00", "tf-01", "tf-02", "tf-03", "tf-04", "tf-05"
        ]
    );
    // The candidates: the seven matches and the three whose tensorflow version only the server can compare.
    assert_eq!(read.take(), 10, "documents read for runnableOn");
}

// The change feed on MongoDB beyond the contract: several replicas on one database, and a writer that went away in
// the middle of a change.

use common::ws::GraphqlSocket;
use contract::open_sse;

fn feed_target(test: &str) -> Option<&'static mongo::Target> {
    match mongo::target() {
        Ok(target) => Some(target),
        Err(reason) => {
            common::report_skip(test, &reason);
            None
        }
    }
}

async fn replica(config: &component_repository::store::mongodb::MongoConfig) -> TestApp {
    TestApp::start(
        Arc::new(MongoStore::connect(config).await.unwrap()),
        tempfile::tempdir().unwrap(),
        None,
        test_config(),
    )
    .await
}

/// Two servers on one database: a subscriber of either sees the changes made through both, in one order.
#[tokio::test]
async fn replicas_share_one_feed() {
    let Some(target) = feed_target("replicas_share_one_feed") else {
        return;
    };
    let config = mongo::config(target);
    let mut first = replica(&config).await;
    first.guard = Some(Box::new(DropDatabases(config.clone())));
    let second = replica(&config).await;
    let mut on_first = open_sse(&first, "/events?after=0", &[]).await;
    let mut on_second = GraphqlSocket::subscribe(
        second.addr,
        "graphql-transport-ws",
        json!({}),
        "subscription { componentEvents(after: 0) { sequence id } }",
    )
    .await
    .unwrap();
    let mut writes = Vec::new();
    for i in 0..20 {
        let (a, b) = (first.client.clone(), second.client.clone());
        let (url_a, url_b) = (first.url("/graphql"), second.url("/graphql"));
        writes.push(tokio::spawn(async move {
            for (client, url, id) in [(a, url_a, format!("a{i}")), (b, url_b, format!("b{i}"))] {
                let body: serde_json::Value = client
                    .post(url)
                    .json(&json!({
                        "query": "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
                        "variables": { "id": id },
                    }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(body.get("errors").is_none(), "{body:#}");
            }
        }));
    }
    for write in writes {
        write.await.unwrap();
    }
    let mut sse_ids = Vec::new();
    let mut ws_ids = Vec::new();
    for _ in 0..40 {
        let event = on_first
            .next(Duration::from_secs(20))
            .await
            .expect("SSE event");
        sse_ids.push((event.id, event.data["id"].as_str().unwrap().to_string()));
        let data = on_second
            .next_result(Duration::from_secs(20))
            .await
            .expect("subscription event")
            .unwrap();
        ws_ids.push((
            data["componentEvents"]["sequence"].as_u64().unwrap(),
            data["componentEvents"]["id"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(sse_ids, ws_ids, "both replicas deliver the same feed");
    assert_eq!(
        sse_ids.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<u64>>()
    );
    let mut names: Vec<String> = sse_ids.into_iter().map(|(_, id)| id).collect();
    names.sort();
    let mut expected: Vec<String> = (0..20)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    expected.sort();
    assert_eq!(names, expected);
}

/// A writer that reserved an event and died: readers wait for it, then settle it from the component document
/// (committed if the change happened, aborted if not) and go on, in order.
#[tokio::test]
async fn events_left_pending_are_settled_by_readers() {
    let Some(target) = feed_target("events_left_pending_are_settled_by_readers") else {
        return;
    };
    let config = mongo::config(target);
    let mut app = replica(&config).await;
    app.guard = Some(Box::new(DropDatabases(config.clone())));
    app.create_service("before").await;
    let client = mongodb::Client::with_uri_str(&config.uri).await.unwrap();
    let db = client.database(&config.database);
    let events = db.collection::<mongodb::bson::Document>("events");
    let long_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 60_000);
    // Seq 2: a creation that happened (the document records the sequence) but was never marked committed.
    // Seq 3: a deletion that never happened (the document is still there).
    db.collection::<mongodb::bson::Document>("services")
        .insert_one(doc! {
            "id": "crashed", "description": "", "storage_id": null,
            "needs": { "storage": null, "RAM": null, "GPU": false, "preinstalled_libraries": {}, "available_models": {} },
            "event_seqs": [2_i64],
        })
        .await
        .unwrap();
    for (seq, event_type) in [(2_i64, "created"), (3_i64, "deleted")] {
        events
            .insert_one(doc! {
                "seq": seq, "state": "pending", "at": long_ago,
                "event": { "type": event_type, "key": { "kind": "service", "id": "crashed" },
                           "file": null, "needs": null, "previous_needs": null },
            })
            .await
            .unwrap();
    }
    // Seq 4: a change that is still in flight (reserved just now): readers stop before it.
    events
        .insert_one(doc! {
            "seq": 4_i64, "state": "pending", "at": DateTime::now(),
            "event": { "type": "updated", "key": { "kind": "service", "id": "before" },
                       "file": null, "needs": null, "previous_needs": null },
        })
        .await
        .unwrap();
    let page = app
        .ok(
            "{ events(after: \"0\") { edges { node { sequence type id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        page["events"]["edges"],
        json!([
            { "node": { "sequence": 1, "type": "CREATED", "id": "before" } },
            { "node": { "sequence": 2, "type": "CREATED", "id": "crashed" } },
        ]),
        "the creation is committed, the deletion that did not happen is dropped, the change in flight waits"
    );
    let states: Vec<String> = {
        use futures_util::TryStreamExt;
        events
            .find(doc! {})
            .sort(doc! { "seq": 1 })
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(|d| d.get_str("state").unwrap().to_string())
            .collect()
    };
    assert_eq!(states, ["committed", "committed", "aborted", "pending"]);
    // The in-flight change completes: the next write goes after it and the feed moves on.
    events
        .update_one(
            doc! { "seq": 4_i64 },
            doc! { "$set": { "state": "committed" } },
        )
        .await
        .unwrap();
    app.create_service("after").await;
    let page = common::wait_for(Duration::from_secs(10), async || {
        let page = app
            .ok(
                "{ events(after: \"3\") { edges { node { sequence id } } } }",
                json!({}),
            )
            .await;
        match page["events"]["edges"].as_array().unwrap().len() {
            2 => Ok(page),
            _ => Err(format!("{page:#}")),
        }
    })
    .await;
    assert_eq!(
        page["events"]["edges"][1]["node"],
        json!({ "sequence": 5, "id": "after" })
    );
}

/// A download by digest finds a variant's bytes through the multikey index on `variants.file.sha256`: the
/// `$elemMatch` the store sends is planned as an index scan, not a collection scan.
#[tokio::test]
async fn variant_digest_lookups_use_the_multikey_index() {
    let test = "variant_digest_lookups_use_the_multikey_index";
    let Some(target) = require_target(test) else {
        return;
    };
    if target.is_wire() {
        common::report_skip(
            test,
            "nx-27017 plans queries in SQLite and uses no MongoDB index; its explain has no IXSCAN to check",
        );
        return;
    }
    let config = mongo::config(target);
    let mut app = replica(&config).await;
    app.guard = Some(Box::new(DropDatabases(config.clone())));
    app.create_service("svc").await;
    let client = mongodb::Client::with_uri_str(&config.uri).await.unwrap();
    let explained = client
        .database(&config.database)
        .run_command(doc! {
            "explain": {
                "find": "services",
                "filter": { "variants": { "$elemMatch": { "file.sha256": "0".repeat(64) } } },
            },
            "verbosity": "queryPlanner",
        })
        .await
        .unwrap();
    let plan = explained
        .get_document("queryPlanner")
        .unwrap()
        .get_document("winningPlan")
        .unwrap()
        .to_string();
    assert!(
        plan.contains("IXSCAN") && plan.contains("variants.file.sha256"),
        "{plan}"
    );
}

/// An alias move whose writer died after reserving its event: readers settle it from the alias record, which
/// carries the sequence exactly when the move happened.
#[tokio::test]
async fn alias_events_left_pending_are_settled_from_the_alias_record() {
    let Some(target) = feed_target("alias_events_left_pending_are_settled_from_the_alias_record")
    else {
        return;
    };
    let config = mongo::config(target);
    let mut app = replica(&config).await;
    app.guard = Some(Box::new(DropDatabases(config.clone())));
    app.ok(
        "mutation { createModel(input: {name: \"m\", version: \"1\", library: \"keras\", description: \"a\"}) { name } }",
        json!({}),
    )
    .await;
    let client = mongodb::Client::with_uri_str(&config.uri).await.unwrap();
    let db = client.database(&config.database);
    let events = db.collection::<mongodb::bson::Document>("events");
    let long_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 60_000);
    // Seq 2: the move of `production` happened (its record carries the sequence); seq 3: the move of `staging`
    // never did (no record carries it).
    db.collection::<mongodb::bson::Document>("model_aliases")
        .insert_one(doc! {
            "model_name": "m", "alias": "production", "model_version": "1", "event_seqs": [2_i64],
        })
        .await
        .unwrap();
    for (seq, alias) in [(2_i64, "production"), (3_i64, "staging")] {
        events
            .insert_one(doc! {
                "seq": seq, "state": "pending", "at": long_ago,
                "event": { "type": "alias_set", "key": { "kind": "model", "name": "m", "version": "1" },
                           "file": null, "needs": null, "previous_needs": null,
                           "alias": { "alias": alias, "from": null, "to": "1", "by": "ops" } },
            })
            .await
            .unwrap();
    }
    let page = app
        .ok(
            "{ events(after: \"1\") { edges { node { sequence type version alias { alias to by } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        page["events"]["edges"],
        json!([{ "node": { "sequence": 2, "type": "ALIAS_SET", "version": "1",
                           "alias": { "alias": "production", "to": "1", "by": "ops" } } }]),
        "the move that happened is committed, the other one dropped"
    );
    let states: Vec<String> = {
        use futures_util::TryStreamExt;
        events
            .find(doc! { "seq": { "$gte": 2_i64 } })
            .sort(doc! { "seq": 1 })
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(|d| d.get_str("state").unwrap().to_string())
            .collect()
    };
    assert_eq!(states, ["committed", "aborted"]);
}

/// Two servers on one database: each webhook delivery is sent once, not once per server, and in order.
#[tokio::test]
async fn replicas_send_each_webhook_delivery_once() {
    use contract::{EXAMINED, Receiver, allow_private, create_webhook, metric, verified};
    let Some(target) = feed_target("replicas_send_each_webhook_delivery_once") else {
        return;
    };
    let config = mongo::config(target);
    let start = |config: component_repository::store::mongodb::MongoConfig| async move {
        TestApp::start(
            Arc::new(MongoStore::connect(&config).await.unwrap()),
            tempfile::tempdir().unwrap(),
            None,
            allow_private(),
        )
        .await
    };
    let mut first = start(config.clone()).await;
    first.guard = Some(Box::new(DropDatabases(config.clone())));
    let second = start(config.clone()).await;
    let receiver = Receiver::start(0).await;
    create_webhook(&first, &receiver.url, "shared", json!(null)).await;
    for i in 0..10 {
        let app = if i % 2 == 0 { &first } else { &second };
        app.create_service(&format!("s{i}")).await;
    }
    receiver.wait_for(10, Duration::from_secs(30)).await;
    // The positive signal: a later event arrives, and the workers have looked at all of them. Deliveries go in
    // order, so a duplicate of an earlier one would have come before the last.
    second.create_service("s10").await;
    receiver.wait_for(11, Duration::from_secs(30)).await;
    let examined = async || metric(&first, EXAMINED).await + metric(&second, EXAMINED).await;
    assert!(common::eventually(Duration::from_secs(30), async || examined().await >= 11.0).await);
    let sequences: Vec<u64> = receiver
        .received()
        .iter()
        .map(|r| verified(r, "shared")["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=11).collect::<Vec<u64>>(),
        "each once, in order"
    );
}

/// Two servers on one database share a rollout: the second sees it with the same cohorts while both step it (their
/// saves are compare-and-set), and once the first is gone (a restart), the second finishes it.
#[tokio::test]
async fn replicas_share_a_rollout_that_survives_a_restart() {
    let Some(target) = feed_target("replicas_share_a_rollout_that_survives_a_restart") else {
        return;
    };
    let config = mongo::config(target);
    let start = async || {
        TestApp::start(
            Arc::new(MongoStore::connect(&config).await.unwrap()),
            tempfile::tempdir().unwrap(),
            None,
            contract::rollout_config(),
        )
        .await
    };
    let first = start().await;
    let mut second = start().await;
    second.guard = Some(Box::new(DropDatabases(config.clone())));
    let handover = contract::start_rollout_to_hand_over(&first).await;
    let third = start().await;
    first.stop().await;
    contract::finish_handed_over_rollout(&second, &handover).await;
    let ended = third.get("/model/det/@production?device=pc-0").await;
    assert_eq!(
        ended.headers()["x-model-version"],
        "2.0",
        "the third replica sees it completed"
    );
}
