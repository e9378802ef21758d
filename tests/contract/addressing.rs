//! From a name to the right bytes: downloads by digest, model aliases, immutable files and per-platform variants.

use serde_json::{Value, json};

use super::Starter;
use crate::common::{TestApp, bytes, config_with, sha256_hex, test_config};

async fn create_model(app: &TestApp, version: &str) {
    app.ok(
        "mutation($v: String!) { createModel(input: {name: \"fall-detection\", version: $v, library: \"keras\"}) { name } }",
        json!({ "v": version }),
    )
    .await;
}

async fn upload_model(app: &TestApp, version: &str, data: Vec<u8>) -> reqwest::Response {
    app.upload(
        "mutation($v: String!, $file: Upload!) { uploadModelFile(name: \"fall-detection\", version: $v, file: $file) { file { sha256 } } }",
        json!({ "v": version }),
        data,
        "model.zip",
    )
    .await
}

pub async fn blobs_are_served_by_digest(start: Starter) {
    let app = start(test_config()).await;
    create_model(&app, "1").await;
    let data = bytes(70_000, 41);
    let digest = sha256_hex(&data);
    assert_eq!(upload_model(&app, "1", data.clone()).await.status(), 200);

    let response = app.get(&format!("/blobs/sha256/{digest}")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["etag"], format!("\"{digest}\""));
    assert_eq!(headers["content-length"], "70000");
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());

    // Upper-case hex names the same bytes; HEAD, ranges and revalidation work as on every download.
    let head = app
        .client
        .head(app.url(&format!("/blobs/sha256/{}", digest.to_uppercase())))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "70000");
    let ranged = app
        .get_with(
            &format!("/blobs/sha256/{digest}"),
            &[("range", "bytes=10-19")],
        )
        .await;
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &data[10..20]);
    let cached = app
        .get_with(
            &format!("/blobs/sha256/{digest}"),
            &[("if-none-match", &format!("\"{digest}\""))],
        )
        .await;
    assert_eq!(cached.status(), 304);

    // Unknown digests are 404s, malformed ones 400s, both with a JSON body.
    let unknown = app.get(&format!("/blobs/sha256/{}", "0".repeat(64))).await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.unwrap()["code"].is_string());
    assert_eq!(app.get("/blobs/sha256/xyz").await.status(), 400);

    // Once nothing refers to the bytes, they are gone from the digest URL too.
    app.ok(
        "mutation { deleteModel(name: \"fall-detection\", version: \"1\") }",
        json!({}),
    )
    .await;
    assert_eq!(
        app.get(&format!("/blobs/sha256/{digest}")).await.status(),
        404
    );
}

const SET_ALIAS: &str = "mutation($v: String!) { setModelAlias(name: \"fall-detection\", alias: \"production\", version: $v) { version aliases } }";

pub async fn model_aliases_move_with_history(start: Starter) {
    let app = start(test_config()).await;
    for version in ["1", "2"] {
        create_model(&app, version).await;
        let data = bytes(1000, version.parse().unwrap());
        assert_eq!(upload_model(&app, version, data).await.status(), 200);
    }
    // A version that would read as an alias is refused at creation.
    let code = app
        .error_code(
            "mutation { createModel(input: {name: \"fall-detection\", version: \"@x\", library: \"keras\"}) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    // An alias needs an existing target.
    assert_eq!(
        app.error_code(SET_ALIAS, json!({ "v": "9" })).await,
        "NOT_FOUND"
    );

    let set = app.ok(SET_ALIAS, json!({ "v": "1" })).await;
    assert_eq!(
        set["setModelAlias"],
        json!({"version": "1", "aliases": ["production"]})
    );
    let by_alias = app
        .ok(
            "{ model(name: \"fall-detection\", alias: \"production\") { version aliases } }",
            json!({}),
        )
        .await;
    assert_eq!(by_alias["model"]["version"], "1");
    let download = app.get("/model/fall-detection/@production").await;
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.bytes().await.unwrap().as_ref(),
        bytes(1000, 1).as_slice()
    );
    let meta: Value = app
        .get("/model/meta?model_name=fall-detection&model_alias=production")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["model_version"], "1");

    // The aliased version cannot be deleted: 409, and it stays.
    let refused = app
        .error_code(
            "mutation { deleteModel(name: \"fall-detection\", version: \"1\") }",
            json!({}),
        )
        .await;
    assert_eq!(refused, "CONFLICT");
    let rest = app
        .client
        .delete(app.url("/model/fall-detection/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 409);

    // Moving it frees the old version and points downloads at the new one.
    app.ok(SET_ALIAS, json!({ "v": "2" })).await;
    let head = app
        .client
        .head(app.url("/model/fall-detection/@production"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["etag"],
        format!("\"{}\"", sha256_hex(&bytes(1000, 2)))
    );
    let old = app
        .ok(
            "{ model(name: \"fall-detection\", version: \"1\") { aliases } }",
            json!({}),
        )
        .await;
    assert_eq!(old["model"]["aliases"], json!([]));
    app.ok(
        "mutation { deleteModel(name: \"fall-detection\", version: \"1\") }",
        json!({}),
    )
    .await;
    app.ok(
        "mutation { deleteModelAlias(name: \"fall-detection\", alias: \"production\") }",
        json!({}),
    )
    .await;
    assert_eq!(
        app.get("/model/fall-detection/@production").await.status(),
        404
    );
    let gone = app
        .ok(
            "{ model(name: \"fall-detection\", alias: \"production\") { version } }",
            json!({}),
        )
        .await;
    assert_eq!(gone["model"], Value::Null);

    let history = app
        .ok(
            "{ modelAliasHistory(name: \"fall-detection\", alias: \"production\") { from to at by } }",
            json!({}),
        )
        .await;
    let moves: Vec<(Value, Value, Value)> = history["modelAliasHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].clone(), m["to"].clone(), m["by"].clone()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (Value::Null, json!("1"), json!("anonymous")),
            (json!("1"), json!("2"), json!("anonymous")),
            (json!("2"), Value::Null, json!("anonymous")),
        ]
    );
}

pub async fn immutable_files_refuse_replacement_and_deletion(start: Starter) {
    let app = start(config_with(|c| c.immutable_files = true)).await;
    create_model(&app, "1").await;
    create_model(&app, "2").await;
    // A component without a file can still be deleted, and a first upload is accepted.
    app.ok(
        "mutation { deleteModel(name: \"fall-detection\", version: \"2\") }",
        json!({}),
    )
    .await;
    assert_eq!(upload_model(&app, "1", bytes(500, 1)).await.status(), 200);

    let again: Value = upload_model(&app, "1", bytes(500, 2))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["errors"][0]["extensions"]["code"], "IMMUTABLE");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes(10, 3)).file_name("m.zip"),
    );
    let rest = app
        .client
        .put(app.url("/model/fall-detection/1"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 409);
    assert_eq!(rest.json::<Value>().await.unwrap()["code"], "IMMUTABLE");
    let delete = app
        .client
        .delete(app.url("/model/fall-detection/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 409);
    // The first file is still the one served.
    let served = app.get("/model/fall-detection/1").await;
    assert_eq!(
        served.bytes().await.unwrap().as_ref(),
        bytes(500, 1).as_slice()
    );
}

pub async fn locked_components_keep_their_file(start: Starter) {
    let app = start(test_config()).await;
    app.create_service("svc").await;
    let locked = app
        .ok(
            "mutation { lockService(id: \"svc\") { locked } }",
            json!({}),
        )
        .await;
    assert_eq!(locked["lockService"]["locked"], true);
    let upload = |seed| {
        app.upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { locked file { sha256 } } }",
            json!({}),
            bytes(300, seed),
            "svc.zip",
        )
    };
    let first: Value = upload(1).await.json().await.unwrap();
    assert_eq!(
        first["data"]["uploadServiceFile"]["file"]["sha256"],
        sha256_hex(&bytes(300, 1))
    );
    let second: Value = upload(2).await.json().await.unwrap();
    assert_eq!(second["errors"][0]["extensions"]["code"], "IMMUTABLE");
    assert_eq!(
        app.error_code("mutation { deleteService(id: \"svc\") }", json!({}))
            .await,
        "IMMUTABLE"
    );
    // A lock freezes the metadata too, over GraphQL and REST alike, and leaves it as it was.
    assert_eq!(
        app.error_code(
            "mutation { updateService(id: \"svc\", input: {description: \"changed\"}) { id } }",
            json!({})
        )
        .await,
        "IMMUTABLE"
    );
    let rest = reqwest::Client::new()
        .put(app.url("/service/meta/svc"))
        .json(&json!({ "id": "svc", "description": "changed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 409);
    let body: Value = rest.json().await.unwrap();
    assert_eq!(body["code"], "IMMUTABLE");
    let now = app
        .ok("{ service(id: \"svc\") { description locked } }", json!({}))
        .await;
    assert_ne!(now["service"]["description"], "changed");
    assert_eq!(now["service"]["locked"], true);
    // Nor can a file be added for a platform: devices of that platform would get other bytes than were locked.
    let variant = upload_variant(
        &app,
        json!({ "os": "linux", "arch": "arm64" }),
        bytes(10, 3),
    )
    .await;
    assert_eq!(
        variant["errors"][0]["extensions"]["code"], "IMMUTABLE",
        "{variant}"
    );
    let arm = app
        .get("/service/svc?platform=linux/arm64")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        sha256_hex(&arm),
        sha256_hex(&bytes(300, 1)),
        "arm64 devices still get the locked file"
    );
    // Other components are unaffected on a server with mutable files.
    create_model(&app, "1").await;
    assert_eq!(upload_model(&app, "1", bytes(10, 1)).await.status(), 200);
    assert_eq!(upload_model(&app, "1", bytes(10, 2)).await.status(), 200);
    assert_eq!(
        app.error_code(
            "mutation { lockModel(name: \"fall-detection\", version: \"9\") { locked } }",
            json!({})
        )
        .await,
        "NOT_FOUND"
    );
}

async fn upload_variant(app: &TestApp, platform: Value, data: Vec<u8>) -> Value {
    app.upload(
        "mutation($p: PlatformInput, $file: Upload!) { uploadServiceFile(id: \"svc\", file: $file, platform: $p) { variants { platform { os arch variant accelerator } file { sha256 } } } }",
        json!({ "p": platform }),
        data,
        "svc.zip",
    )
    .await
    .json()
    .await
    .unwrap()
}

const RUNNABLE: &str = "query($d: DeviceInput!) { runnableOn(device: $d, kinds: [SERVICE]) { edges { node { ... on Service { id } } } } }";

fn ids(data: &Value) -> Vec<String> {
    data["runnableOn"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn variants_are_chosen_by_platform(start: Starter) {
    let app = start(test_config()).await;
    for id in ["svc", "plain"] {
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
            json!({ "id": id }),
        )
        .await;
    }
    let (v6, v7, cuda) = (bytes(100, 6), bytes(100, 7), bytes(100, 8));
    upload_variant(
        &app,
        json!({"os": "linux", "arch": "arm", "variant": "v6"}),
        v6.clone(),
    )
    .await;
    upload_variant(&app, json!({"os": "linux", "arch": "armhf"}), v7.clone()).await;
    let listed = upload_variant(
        &app,
        json!({"os": "linux", "arch": "x86_64", "accelerator": "cuda", "acceleratorVersion": ">=8.6"}),
        cuda.clone(),
    )
    .await;
    let variants = listed["data"]["uploadServiceFile"]["variants"]
        .as_array()
        .unwrap();
    assert_eq!(variants.len(), 3, "{listed}");
    assert_eq!(
        variants[1]["platform"],
        json!({"os": "linux", "arch": "arm", "variant": "v7", "accelerator": null}),
        "names are normalised as containerd does"
    );
    let bad = upload_variant(
        &app,
        json!({"os": "linux", "arch": "arm", "variant": "seven"}),
        bytes(1, 1),
    )
    .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "INVALID_INPUT");

    // REST picks the newest variant the platform runs; the original route without a platform has no default.
    let app = &app;
    let pick = |p: &str| {
        let path = format!("/service/svc?platform={p}");
        async move { app.get(&path).await }
    };
    assert_eq!(
        pick("linux/arm/v7").await.bytes().await.unwrap().as_ref(),
        v7.as_slice()
    );
    assert_eq!(
        pick("linux/arm/v6").await.bytes().await.unwrap().as_ref(),
        v6.as_slice()
    );
    let none = pick("linux/arm64").await;
    assert_eq!(none.status(), 404);
    let detail = none.json::<Value>().await.unwrap()["detail"].to_string();
    assert!(
        detail.contains("linux/arm/v7") && detail.contains("linux/arm/v6"),
        "{detail}"
    );
    assert_eq!(app.get("/service/svc?platform=linux").await.status(), 400);
    assert_eq!(app.get("/service/svc").await.status(), 404);

    // REST names the device's accelerators with their versions, matched as `fileFor` matches them.
    assert_eq!(
        pick("linux/amd64&accelerator=cuda&accelerator_version=8.9")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        cuda.as_slice()
    );
    assert_eq!(
        pick("linux/x86_64&accelerator=npu,cuda&accelerator_version=1.0,8.6")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        cuda.as_slice(),
        "several accelerators, paired in order"
    );
    for too_old in [
        "linux/amd64&accelerator=cuda&accelerator_version=7.5",
        "linux/amd64",
    ] {
        let none = pick(too_old).await;
        assert_eq!(none.status(), 404, "{too_old}");
        let detail = none.json::<Value>().await.unwrap()["detail"].to_string();
        assert!(
            detail.contains("linux/amd64/v1 cuda >=8.6") && detail.contains("linux/arm/v7"),
            "{detail}"
        );
    }
    for bad in [
        "/service/svc?platform=linux/amd64&accelerator=cuda",
        "/service/svc?platform=linux/amd64&accelerator=cuda,npu&accelerator_version=8.6",
        "/service/svc?accelerator=cuda&accelerator_version=8.6",
        "/service/svc?platform=linux/amd64&accelerator=c%20uda&accelerator_version=8.6",
    ] {
        let refused = app.get(bad).await;
        assert_eq!(refused.status(), 400, "{bad}");
        assert_eq!(
            refused.json::<Value>().await.unwrap()["code"],
            "INVALID_INPUT",
            "{bad}"
        );
    }

    // GraphQL: the accelerated build for a device whose CUDA fits, nothing for one whose CUDA is too old.
    let file_for = |version: &str| {
        app.ok(
            "query($d: DeviceInput!) { service(id: \"svc\") { fileFor(device: $d) { sha256 downloadUrl } } }",
            json!({ "d": {"gpu": true, "platform": {"os": "linux", "arch": "amd64", "accelerators": [{"name": "cuda", "version": version}]}} }),
        )
    };
    let fits = file_for("8.9").await;
    assert_eq!(
        fits["service"]["fileFor"],
        json!({"sha256": sha256_hex(&cuda), "downloadUrl": format!("/blobs/sha256/{}?filename=svc%2Ezip", sha256_hex(&cuda))})
    );
    assert_eq!(file_for("7.5").await["service"]["fileFor"], Value::Null);

    // runnableOn lists a component with variants only when one fits; one without variants always.
    let arm64 = app
        .ok(
            RUNNABLE,
            json!({ "d": {"platform": {"os": "linux", "arch": "arm64"}} }),
        )
        .await;
    assert_eq!(ids(&arm64), vec!["plain"]);
    let armv7 = app
        .ok(
            RUNNABLE,
            json!({ "d": {"platform": {"os": "linux", "arch": "arm", "variant": "v7"}} }),
        )
        .await;
    assert_eq!(ids(&armv7), vec!["plain", "svc"]);

    // Replacing a variant serves the new bytes.
    let v7b = bytes(100, 17);
    upload_variant(
        app,
        json!({"os": "linux", "arch": "arm", "variant": "v7"}),
        v7b.clone(),
    )
    .await;
    assert_eq!(
        pick("linux/arm/v7").await.bytes().await.unwrap().as_ref(),
        v7b.as_slice()
    );
}

/// A per-platform file saves under the name it was uploaded with (its digest names nothing), on every store.
pub async fn a_variant_downloads_under_its_own_name(start: Starter) {
    let app = start(test_config()).await;
    app.create_service("svc").await;
    let data = bytes(100, 8);
    let uploaded = app
        .upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file, platform: {os: \"linux\", arch: \"arm64\"}) { variants { file { downloadUrl } } } }",
            json!({}),
            data.clone(),
            "édge build & co.tar.gz",
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let url = uploaded["data"]["uploadServiceFile"]["variants"][0]["file"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app.get(&url).await;
    assert_eq!(response.status(), 200, "{url}");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        disposition,
        "attachment; filename=\"_dge build & co.tar.gz\"; filename*=UTF-8''%C3%A9dge%20build%20&%20co.tar.gz",
        "{url}"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());
}

pub async fn variant_bytes_are_served_by_digest(start: Starter) {
    let app = start(test_config()).await;
    app.create_service("svc").await;
    let (v6, v7, v7b) = (bytes(100, 6), bytes(100, 7), bytes(100, 17));
    let blob = |data: &Vec<u8>| format!("/blobs/sha256/{}", sha256_hex(data));
    upload_variant(
        &app,
        json!({"os": "linux", "arch": "arm", "variant": "v6"}),
        v6.clone(),
    )
    .await;
    upload_variant(
        &app,
        json!({"os": "linux", "arch": "arm", "variant": "v7"}),
        v7.clone(),
    )
    .await;
    assert_eq!(
        app.get(&blob(&v6)).await.bytes().await.unwrap().as_ref(),
        v6.as_slice()
    );
    assert_eq!(app.get(&blob(&v7)).await.status(), 200);
    // Replacing a variant frees its old bytes; deleting the component frees them all.
    upload_variant(
        &app,
        json!({"os": "linux", "arch": "arm", "variant": "v7"}),
        v7b.clone(),
    )
    .await;
    assert_eq!(app.get(&blob(&v7)).await.status(), 404);
    assert_eq!(app.get(&blob(&v7b)).await.status(), 200);
    app.ok("mutation { deleteService(id: \"svc\") }", json!({}))
        .await;
    for data in [&v6, &v7b] {
        assert_eq!(app.get(&blob(data)).await.status(), 404);
    }
}
