//! dump and restore between embedded stores, run as an operator runs them: the binary's subcommands.
//! (Moves between the embedded store and MongoDB, and `import`, are in tests/mongodb.rs.)

mod common;

use std::path::Path;

use common::archive::{data_dir, dump_embedded, populated_store, restore_embedded};
use common::process::run;
use common::{bytes, sha256_hex};
use serde_json::json;

async fn component_count(dir: &Path) -> u64 {
    let app = common::embedded_in(dir).await;
    let data = app
        .ok(
            "{ models { totalCount } transformations { totalCount } services { totalCount } inferencers { totalCount } }",
            json!({}),
        )
        .await;
    let total = ["models", "transformations", "services", "inferencers"]
        .iter()
        .map(|k| data[k]["totalCount"].as_u64().unwrap())
        .sum();
    app.stop().await;
    total
}

#[tokio::test]
async fn dump_and_restore_round_trip_is_byte_identical() {
    let source = populated_store().await;
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first.tar");
    dump_embedded(source.path(), &first);

    let target = tempfile::tempdir().unwrap();
    restore_embedded(target.path(), &first);
    let second = work.path().join("second.tar");
    dump_embedded(target.path(), &second);
    let (a, b) = (
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
    );
    assert!(
        a == b,
        "a dump of the restored store differs from the original dump"
    );

    // The restored store serves the same files, timestamps included.
    let app = common::embedded_in(target.path()).await;
    let model = app
        .get("/model/fall-detection/pilot-2-1")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&model), sha256_hex(&bytes(700_000, 1)));
    let service = app
        .ok("{ service(id: \"inference.svc\") { needs { gpu availableModels { model { library } } } file { sha256 } } }", json!({}))
        .await;
    assert_eq!(
        service["service"]["needs"]["availableModels"][0]["model"]["library"],
        "keras"
    );
    assert_eq!(
        service["service"]["file"]["sha256"],
        sha256_hex(&bytes(5_000, 2))
    );
    common::archive::assert_variants_and_aliases(&app).await;
}

/// An archive of version 1 (before variants and aliases travelled) still restores: its default files.
#[tokio::test]
async fn version_1_archives_restore_their_default_files() {
    let source = populated_store().await;
    let work = tempfile::tempdir().unwrap();
    let current = work.path().join("current.tar");
    dump_embedded(source.path(), &current);
    let old = work.path().join("v1.tar");
    common::archive::rewrite_as_version_1(&current, &old);

    let target = tempfile::tempdir().unwrap();
    restore_embedded(target.path(), &old);
    let app = common::embedded_in(target.path()).await;
    let model = app.get("/model/fall-detection/pilot-2-1").await;
    assert_eq!(
        model.bytes().await.unwrap().as_ref(),
        bytes(700_000, 1).as_slice()
    );
    let data = app
        .ok(
            "{ service(id: \"inference.svc\") { variants { file { sha256 } } }
               model(name: \"fall-detection\", version: \"pilot-2-2\") { aliases } }",
            json!({}),
        )
        .await;
    assert_eq!(data["service"]["variants"], json!([]));
    assert_eq!(data["model"]["aliases"], json!([]));
}

#[tokio::test]
async fn damaged_archives_are_refused_and_nothing_is_written() {
    let source = populated_store().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("good.tar");
    dump_embedded(source.path(), &archive);
    let good = std::fs::read(&archive).unwrap();
    let manifest_at = good
        .windows(13)
        .position(|w| w == b"manifest.json")
        .unwrap();
    let model_start = bytes(700_000, 1)[..8].to_vec();
    let model_data_at = good.windows(8).position(|w| w == model_start).unwrap();

    let mut flipped = good.clone();
    flipped[model_data_at + 1000] ^= 0x40;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "without its manifest",
            good[..manifest_at].to_vec(),
            "truncated",
        ),
        ("with a flipped bit", flipped, "does not hold the bytes"),
        ("empty", Vec::new(), "manifest is missing"),
    ];
    for (what, bytes, expected) in cases {
        let path = work.path().join("bad.tar");
        std::fs::write(&path, &bytes).unwrap();
        let target = tempfile::tempdir().unwrap();
        let output = run(&[
            "restore",
            "--data-dir",
            &data_dir(target.path()),
            "--in",
            path.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "an archive {what} was restored");
        assert!(stderr.contains(expected), "an archive {what}: {stderr}");
        assert_eq!(
            component_count(target.path()).await,
            0,
            "an archive {what} wrote components"
        );
    }
}

#[tokio::test]
async fn restore_only_adds_components() {
    let source = populated_store().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    dump_embedded(source.path(), &archive);
    // Restoring into the store it came from would overwrite every component: refused, with nothing changed.
    let output = run(&[
        "restore",
        "--data-dir",
        &data_dir(source.path()),
        "--in",
        archive.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert_eq!(component_count(source.path()).await, 5);
}

#[tokio::test]
async fn seeding_restores_only_into_an_empty_store() {
    let source = populated_store().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("seed.tar");
    dump_embedded(source.path(), &archive);
    let target = tempfile::tempdir().unwrap();
    let seed = [
        "restore",
        "--if-empty",
        "--data-dir",
        &data_dir(target.path()),
        "--in",
        archive.to_str().unwrap(),
    ];
    common::archive::ok(&seed);
    assert_eq!(component_count(target.path()).await, 5);
    // Every later start seeds again: a store that holds components is left as it is, and that is no error.
    let app = common::embedded_in(target.path()).await;
    app.ok(
        "mutation { deleteInferencer(id: \"tf.inferencer\") }",
        json!({}),
    )
    .await;
    app.stop().await;
    common::archive::ok(&seed);
    assert_eq!(component_count(target.path()).await, 4);
}

/// An archive is input like any request: keys the API would refuse (path separators, `.`, `..`, control
/// characters, empty) are refused by `restore` too, before anything is written.
#[tokio::test]
async fn crafted_keys_are_refused_by_restore() {
    let source = populated_store().await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("good.tar");
    dump_embedded(source.path(), &archive);
    // The untouched copy restores: the crafting itself is sound.
    let copy = work.path().join("copy.tar");
    common::archive::rewrite_components(&archive, &copy, str::to_owned);
    let target = tempfile::tempdir().unwrap();
    restore_embedded(target.path(), &copy);
    assert_eq!(component_count(target.path()).await, 5);

    for bad in [
        "../../etc",
        "a/b",
        ".",
        "..",
        "line\\nbreak",
        "nul\\u0000",
        "",
        " padded",
    ] {
        let crafted = work.path().join("crafted.tar");
        common::archive::rewrite_components(&archive, &crafted, |text| {
            let edited = text.replace("\"id\":\"inference.svc\"", &format!("\"id\":\"{bad}\""));
            assert_ne!(edited, text, "the archive names the service as expected");
            edited
        });
        let target = tempfile::tempdir().unwrap();
        let output = run(&[
            "restore",
            "--data-dir",
            &data_dir(target.path()),
            "--in",
            crafted.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "the key {bad:?} was restored");
        assert!(stderr.contains("key is not valid"), "{bad:?}: {stderr}");
        assert_eq!(
            component_count(target.path()).await,
            0,
            "{bad:?}: components written"
        );
    }
}

/// Signatures travel in archives: a restored store lists each bundle exactly as it was attached.
#[tokio::test]
async fn signatures_survive_dump_and_restore() {
    use testkit::signing::{Key, available, sign_with_key};
    if let Err(reason) = available() {
        return common::report_skip("signatures_survive_dump_and_restore", &reason);
    }
    let source = tempfile::tempdir().unwrap();
    let data = bytes(30_000, 61);
    let file = source.path().join("model.onnx");
    std::fs::write(&file, &data).unwrap();
    let bundle = sign_with_key(&file, &Key::p256(source.path()));
    let app = common::embedded_in(source.path()).await;
    app.ok(
        "mutation { createModel(input: {name: \"signed\", version: \"1\", library: \"onnx\", description: \"\"}) { name } }",
        json!({}),
    )
    .await;
    let response = app
        .upload(
            "mutation($file: Upload!) { uploadModelFile(name: \"signed\", version: \"1\", file: $file) { name } }",
            json!({}),
            data,
            "model.onnx",
        )
        .await;
    assert_eq!(response.status(), 200);
    let attached = app.attach_signature("/model/signed/1", &bundle).await;
    assert_eq!(attached.status(), 201);
    app.stop().await;

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("signed.tar");
    dump_embedded(source.path(), &archive);
    let target = tempfile::tempdir().unwrap();
    restore_embedded(target.path(), &archive);
    let app = common::embedded_in(target.path()).await;
    let listing = app
        .get("/model/signed/1/signatures")
        .await
        .text()
        .await
        .unwrap();
    assert!(listing.contains(&bundle), "{listing}");
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing["signatures"].as_array().unwrap().len(), 1);
}
