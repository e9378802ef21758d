//! Helpers for dump/restore tests: a populated embedded store and running the subcommands.

use std::path::Path;

use serde_json::json;
use tempfile::TempDir;

use super::process::run;
use super::{bytes, test_config};

/// A store with every kind, files (two components share the same bytes) and a component without a file.
pub async fn populated_store() -> TempDir {
    let app = super::embedded(test_config()).await;
    app.ok(
        "mutation {
          createModel(input: {name: \"fall-detection\", version: \"pilot-2-1\", library: \"keras\", description: \"CNN\"}) { name }
          createTransformation(input: {id: \"custom.img_transpose\", parameterTypes: {axes: \"list\"},
            defaultValues: {axes: [1, 0, 2]}, outputs: [\"image\"], needs: {ram: 0.5}}) { id }
          createService(input: {id: \"inference.svc\", needs: {gpu: true,
            preinstalledLibraries: [{name: \"grpcio\", version: \">=1.50\"}],
            availableModels: [{name: \"fall-detection\", version: \"pilot-2-1\"}]}}) { id }
          createInferencer(input: {id: \"tf.inferencer\", library: \"tensorflow\", useCuda: true}) { id }
        }",
        json!({}),
    )
    .await;
    for (mutation, data) in [
        (
            "uploadModelFile(name: \"fall-detection\", version: \"pilot-2-1\", file: $file) { name }",
            bytes(700_000, 1),
        ),
        (
            "uploadTransformationFile(id: \"custom.img_transpose\", file: $file) { id }",
            bytes(5_000, 2),
        ),
        (
            "uploadServiceFile(id: \"inference.svc\", file: $file) { id }",
            bytes(5_000, 2),
        ),
    ] {
        let response = app
            .upload(
                &format!("mutation($file: Upload!) {{ {mutation} }}"),
                json!({}),
                data,
                "f.zip",
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    // Per-platform variants (one shares its bytes with another component's file) and aliases with history:
    // `production` moved once, `staging` set and deleted.
    app.ok(
        "mutation { createModel(input: {name: \"fall-detection\", version: \"pilot-2-2\", library: \"keras\"}) { name } }",
        json!({}),
    )
    .await;
    for (mutation, platform, data) in [
        (
            "uploadServiceFile(id: \"inference.svc\", file: $file, platform: $p) { id }",
            json!({"os": "linux", "arch": "arm", "variant": "v7"}),
            bytes(3_000, 3),
        ),
        (
            "uploadModelFile(name: \"fall-detection\", version: \"pilot-2-2\", file: $file, platform: $p) { name }",
            json!({"os": "linux", "arch": "amd64", "accelerator": "cuda", "acceleratorVersion": ">=8.6"}),
            bytes(4_000, 4),
        ),
        (
            "uploadModelFile(name: \"fall-detection\", version: \"pilot-2-2\", file: $file, platform: $p) { name }",
            json!({"os": "linux", "arch": "arm64"}),
            bytes(5_000, 2),
        ),
    ] {
        let response = app
            .upload(
                &format!("mutation($file: Upload!, $p: PlatformInput) {{ {mutation} }}"),
                json!({ "p": platform }),
                data,
                "v.bin",
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
    }
    for (alias, version) in [
        ("production", Some("pilot-2-1")),
        ("staging", Some("pilot-2-2")),
        ("production", Some("pilot-2-2")),
        ("staging", None),
    ] {
        let mutation = match version {
            Some(v) => format!(
                "mutation {{ setModelAlias(name: \"fall-detection\", alias: \"{alias}\", version: \"{v}\") {{ version }} }}"
            ),
            None => format!(
                "mutation {{ deleteModelAlias(name: \"fall-detection\", alias: \"{alias}\") }}"
            ),
        };
        app.ok(&mutation, json!({})).await;
    }
    app.stop_keeping_data().await
}

/// Checks that a store restored from [`populated_store`]'s dump has its variants and aliases, with history.
pub async fn assert_variants_and_aliases(app: &super::TestApp) {
    let production = app
        .get("/model/fall-detection/@production?platform=linux/amd64&accelerator=cuda&accelerator_version=8.9")
        .await;
    assert_eq!(production.status(), 200);
    assert_eq!(
        production.bytes().await.unwrap().as_ref(),
        bytes(4_000, 4).as_slice()
    );
    let arm = app
        .get("/service/inference.svc?platform=linux/arm/v7")
        .await;
    assert_eq!(
        arm.bytes().await.unwrap().as_ref(),
        bytes(3_000, 3).as_slice()
    );
    let digest = super::sha256_hex(&bytes(5_000, 2));
    assert_eq!(
        app.get(&format!("/blobs/sha256/{digest}")).await.status(),
        200
    );
    let data = app
        .ok(
            "{ production: modelAliasHistory(name: \"fall-detection\", alias: \"production\") { from to by }
               staging: modelAliasHistory(name: \"fall-detection\", alias: \"staging\") { from to }
               model(name: \"fall-detection\", version: \"pilot-2-2\") { aliases } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["production"],
        json!([
            { "from": null, "to": "pilot-2-1", "by": "anonymous" },
            { "from": "pilot-2-1", "to": "pilot-2-2", "by": "anonymous" },
        ])
    );
    assert_eq!(
        data["staging"],
        json!([{ "from": null, "to": "pilot-2-2" }, { "from": "pilot-2-2", "to": null }])
    );
    assert_eq!(data["model"]["aliases"], json!(["production"]));
    // The alias still refuses deletion of the version it names.
    assert_eq!(
        app.error_code(
            "mutation { deleteModel(name: \"fall-detection\", version: \"pilot-2-2\") }",
            json!({})
        )
        .await,
        "CONFLICT"
    );
}

pub fn data_dir(dir: &Path) -> String {
    dir.join("data").display().to_string()
}

/// Runs a subcommand that must succeed, and checks that it stays quiet when no terminal is attached.
pub fn ok(args: &[&str]) {
    let output = run(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "{args:?} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.is_empty() && stderr.is_empty(),
        "{args:?} is not quiet in scripts:\n{stdout}\n{stderr}"
    );
}

/// `dump` of the embedded store in `dir` to `archive`.
pub fn dump_embedded(dir: &Path, archive: &Path) {
    ok(&[
        "dump",
        "--data-dir",
        &data_dir(dir),
        "--out",
        archive.to_str().unwrap(),
    ]);
}

/// `restore` of `archive` into the embedded store in `dir`.
pub fn restore_embedded(dir: &Path, archive: &Path) {
    ok(&[
        "restore",
        "--data-dir",
        &data_dir(dir),
        "--in",
        archive.to_str().unwrap(),
    ]);
}

/// The text of `components.jsonl` in an archive, for readable comparisons.
pub fn components_of(archive: &Path) -> String {
    use std::io::Read;
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("components.jsonl") {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            return text;
        }
    }
    panic!("{} has no components.jsonl", archive.display())
}

/// Writes to `out` a copy of `archive` whose `components.jsonl` is `edit`ed, with a manifest that agrees: an
/// archive crafted by hand rather than damaged.
pub fn rewrite_components(archive: &Path, out: &Path, edit: impl Fn(&str) -> String) {
    use std::io::Read;
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_str().unwrap().to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.push((name, data));
    }
    let components = edit(
        &String::from_utf8(
            entries
                .iter()
                .find(|(n, _)| n == "components.jsonl")
                .unwrap()
                .1
                .clone(),
        )
        .unwrap(),
    );
    let mut builder = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, mut data) in entries {
        if name == "components.jsonl" {
            data = components.clone().into_bytes();
        }
        if name == "manifest.json" {
            let mut manifest: serde_json::Value = serde_json::from_slice(&data).unwrap();
            manifest["entries"]["components.jsonl"] = json!({
                "sha256": super::sha256_hex(components.as_bytes()),
                "size": components.len(),
            });
            data = serde_json::to_vec(&manifest).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, &name, data.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
}

/// Writes to `out` what a version-1 dump of the same store held: no aliases, and only the blobs of default files
/// (version 1 listed variants without their bytes).
pub fn rewrite_as_version_1(archive: &Path, out: &Path) {
    use std::io::Read;
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_str().unwrap().to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.push((name, data));
    }
    let components = String::from_utf8(
        entries
            .iter()
            .find(|(n, _)| n == "components.jsonl")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let defaults: Vec<String> = components
        .lines()
        .filter_map(|line| {
            let c: serde_json::Value = serde_json::from_str(line).unwrap();
            c["file"]["sha256"].as_str().map(|s| format!("blobs/{s}"))
        })
        .collect();
    entries.retain(|(name, _)| {
        name == "components.jsonl" || name == "manifest.json" || defaults.contains(name)
    });
    let mut builder = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, mut data) in entries {
        if name == "manifest.json" {
            let mut manifest: serde_json::Value = serde_json::from_slice(&data).unwrap();
            manifest["version"] = json!(1);
            let kept = manifest["entries"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(n, _)| *n == "components.jsonl" || defaults.contains(n))
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect::<serde_json::Map<_, _>>();
            manifest["entries"] = serde_json::Value::Object(kept);
            data = serde_json::to_vec(&manifest).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, &name, data.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
}
