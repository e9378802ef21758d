use serde_json::json;

use super::Starter;
use crate::common::test_config;

pub const MODEL_FIELDS: &str =
    "name version library description createdAt updatedAt file { size sha256 }";
pub const NEEDS_FIELDS: &str = "needs { storage ram gpu preinstalledLibraries { name version } availableModels { name version } }";

pub async fn health_and_readiness_answer(start: Starter) {
    let app = start(test_config()).await;
    let alive = app.get("/healthz").await;
    assert_eq!(alive.status(), 200);
    assert_eq!(
        alive.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
    // The embedded store loads its catalogue in the background (503 until then): on a busy machine that takes a
    // moment even for an empty store.
    let ready = crate::common::wait_for(std::time::Duration::from_secs(10), async || {
        let ready = app.get("/readyz").await;
        match ready.status() {
            reqwest::StatusCode::SERVICE_UNAVAILABLE => Err("still loading (503)"),
            _ => Ok(ready),
        }
    })
    .await;
    assert_eq!(ready.status(), 200, "the store answers");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert!(body["backend"].is_string());
}

pub async fn creates_and_fetches_every_kind(start: Starter) {
    let app = start(test_config()).await;
    let created = app
        .ok(
            &format!(
                "mutation {{ createModel(input: {{name: \"fall-detection\", version: \"pilot-2-1\", library: \"keras\",
                   description: \"A CNN\"}}) {{ {MODEL_FIELDS} }} }}"
            ),
            json!({}),
        )
        .await;
    let model = &created["createModel"];
    assert_eq!(model["library"], "keras");
    assert_eq!(model["file"], json!(null));
    assert_eq!(model["createdAt"], model["updatedAt"]);

    let fetched = app
        .ok(
            &format!(
                "{{ model(name: \"fall-detection\", version: \"pilot-2-1\") {{ {MODEL_FIELDS} }} }}"
            ),
            json!({}),
        )
        .await;
    assert_eq!(&fetched["model"], model);

    let needs = json!({
        "storage": 1.5, "ram": 2.0, "gpu": true,
        "preinstalledLibraries": [{"name": "tensorflow", "version": "2.12.0"}],
        "availableModels": [{"name": "fall-detection", "version": "pilot-2-1"}]
    });
    let transformation = app
        .ok(
            &format!(
                "mutation($needs: NeedsInput!) {{ createTransformation(input: {{
                    id: \"custom.preprocess_tensorflow_tensor\", description: \"reshape\",
                    parameterTypes: {{axis: \"int\"}}, defaultValues: {{axis: 0, names: [\"a\"]}},
                    outputs: [\"np.ndarray\"], needs: $needs}}) {{
                    id description parameterTypes defaultValues outputs {NEEDS_FIELDS} }} }}"
            ),
            json!({ "needs": needs }),
        )
        .await;
    assert_eq!(
        transformation["createTransformation"],
        json!({
            "id": "custom.preprocess_tensorflow_tensor", "description": "reshape",
            "parameterTypes": {"axis": "int"}, "defaultValues": {"axis": 0, "names": ["a"]},
            "outputs": ["np.ndarray"], "needs": needs
        })
    );
    app.ok(
        "mutation { createService(input: {id: \"inference_application.code.services.extended_inference_svc\",
            description: \"gRPC\"}) { id } }",
        json!({}),
    )
    .await;
    app.ok(
        "mutation { createInferencer(input: {id: \"inference_application.code.inferencers.torch_rcnn_inferencer\",
            library: \"torch\", useCuda: true, needs: {gpu: true}}) { id } }",
        json!({}),
    )
    .await;

    let all = app
        .ok(
            &format!(
                "{{ transformation(id: \"custom.preprocess_tensorflow_tensor\") {{ id {NEEDS_FIELDS} }}
                   service(id: \"inference_application.code.services.extended_inference_svc\") {{ id description {NEEDS_FIELDS} file {{ size }} }}
                   inferencer(id: \"inference_application.code.inferencers.torch_rcnn_inferencer\") {{ library useCuda needs {{ gpu }} }}
                   missing: service(id: \"nope\") {{ id }} }}"
            ),
            json!({}),
        )
        .await;
    assert_eq!(all["transformation"]["needs"], needs);
    assert_eq!(all["service"]["description"], "gRPC");
    assert_eq!(
        all["service"]["needs"],
        json!({"storage": null, "ram": null, "gpu": false, "preinstalledLibraries": [], "availableModels": []})
    );
    assert_eq!(all["service"]["file"], json!(null));
    assert_eq!(
        all["inferencer"],
        json!({"library": "torch", "useCuda": true, "needs": {"gpu": true}})
    );
    assert_eq!(all["missing"], json!(null));
}

pub async fn refuses_duplicate_keys(start: Starter) {
    let app = start(test_config()).await;
    let create = "mutation { createService(input: {id: \"svc\"}) { id } }";
    app.ok(create, json!({})).await;
    assert_eq!(app.error_code(create, json!({})).await, "ALREADY_EXISTS");
    let model = "mutation { createModel(input: {name: \"m\", version: \"1\"}) { name } }";
    app.ok(model, json!({})).await;
    assert_eq!(app.error_code(model, json!({})).await, "ALREADY_EXISTS");
    // The same id in another kind is another component.
    app.ok(
        "mutation { createInferencer(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
}

pub async fn concurrent_creates_have_one_winner(start: Starter) {
    let app = start(test_config()).await;
    let attempts = (0..8).map(|i| {
        app.gql(
            "mutation($d: String!) { createService(input: {id: \"race\", description: $d}) { id } }",
            json!({ "d": format!("attempt {i}") }),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.get("errors").is_none()).count();
    assert_eq!(winners, 1, "{results:#?}");
    for loser in results.iter().filter(|r| r.get("errors").is_some()) {
        assert_eq!(loser["errors"][0]["extensions"]["code"], "ALREADY_EXISTS");
    }
}

pub async fn refuses_invalid_keys(start: Starter) {
    let app = start(test_config()).await;
    let long = "x".repeat(300);
    for id in [
        "",
        "a/b",
        "..",
        ".",
        "a..b",
        "back\\slash",
        "line\nbreak",
        " padded",
        long.as_str(),
    ] {
        let code = app
            .error_code(
                "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(code, "INVALID_INPUT", "{id:?}");
    }
    for (name, version) in [
        ("", "1"),
        ("m", ""),
        ("a/b", "1"),
        ("m", ".."),
        ("m", "."),
        (".", "1"),
    ] {
        let code = app
            .error_code(
                "mutation($n: String!, $v: String!) { createModel(input: {name: $n, version: $v}) { name } }",
                json!({ "n": name, "v": version }),
            )
            .await;
        assert_eq!(code, "INVALID_INPUT", "{name:?} {version:?}");
    }
    let listing = app
        .ok(
            "{ services { totalCount } models { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listing,
        json!({"services": {"totalCount": 0}, "models": {"totalCount": 0}})
    );
    // REST paths with such ids are refused cleanly too.
    let response = app.get("/service/a..b").await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_INPUT");
    assert!(body["detail"].as_str().unwrap().contains(".."));
    // `.` would be normalised away by HTTP clients (`/service/.` and even `/service/%2E` are `/service/`).
    let (status, body) = {
        let response = app
            .client
            .post(app.url("/service"))
            .json(&json!({ "id": "." }))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{body}"
    );
}

pub async fn updates_only_what_is_given(start: Starter) {
    let app = start(test_config()).await;
    app.ok(
        "mutation { createInferencer(input: {id: \"inf\", description: \"old\", library: \"torch\",
            needs: {ram: 4, storage: 2, gpu: true, preinstalledLibraries: [{name: \"torch\", version: \"2.1.0\"}]}}) { id } }",
        json!({}),
    )
    .await;
    let before = app
        .ok("{ inferencer(id: \"inf\") { updatedAt } }", json!({}))
        .await;
    let updated = app
        .ok(
            &format!(
                "mutation {{ updateInferencer(id: \"inf\", input: {{description: \"new\", needs: {{ram: null, gpu: false}}}}) {{
                    description library useCuda updatedAt {NEEDS_FIELDS} }} }}"
            ),
            json!({}),
        )
        .await;
    let inferencer = &updated["updateInferencer"];
    assert_eq!(inferencer["description"], "new");
    assert_eq!(inferencer["library"], "torch", "not given, kept");
    assert_eq!(
        inferencer["needs"]["ram"],
        json!(null),
        "explicit null clears"
    );
    assert_eq!(inferencer["needs"]["storage"], 2.0, "not given, kept");
    assert_eq!(inferencer["needs"]["gpu"], false);
    assert_eq!(
        inferencer["needs"]["preinstalledLibraries"],
        json!([{"name": "torch", "version": "2.1.0"}])
    );
    assert_ne!(inferencer["updatedAt"], before["inferencer"]["updatedAt"]);

    app.ok("mutation { createModel(input: {name: \"m\", version: \"1\", library: \"keras\"}) { name } }", json!({}))
        .await;
    let model = app
        .ok(
            "mutation { updateModel(name: \"m\", version: \"1\", input: {description: \"d\"}) { library description } }",
            json!({}),
        )
        .await;
    assert_eq!(
        model["updateModel"],
        json!({"library": "keras", "description": "d"})
    );

    let code = app
        .error_code(
            "mutation { updateService(id: \"nope\", input: {description: \"x\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    let code = app
        .error_code(
            "mutation { updateInferencer(id: \"inf\", input: {needs: {ram: -1}}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    let kept = app
        .ok("{ inferencer(id: \"inf\") { needs { ram } } }", json!({}))
        .await;
    assert_eq!(
        kept["inferencer"]["needs"]["ram"],
        json!(null),
        "a refused update changes nothing"
    );
}

pub async fn deletes_component_and_file(start: Starter) {
    let app = start(test_config()).await;
    app.create_service("svc").await;
    let response = app
        .upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
            json!({}),
            b"service code".to_vec(),
            "svc.zip",
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.get("/service/svc").await.status(), 200);
    let deleted = app
        .ok("mutation { deleteService(id: \"svc\") }", json!({}))
        .await;
    assert_eq!(deleted["deleteService"], true);
    assert_eq!(
        app.ok("{ service(id: \"svc\") { id } }", json!({})).await["service"],
        json!(null)
    );
    assert_eq!(app.get("/service/svc").await.status(), 404);
    assert_eq!(
        app.error_code("mutation { deleteService(id: \"svc\") }", json!({}))
            .await,
        "NOT_FOUND"
    );
    // The id is free again.
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id file { size } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        app.get("/service/svc").await.status(),
        404,
        "the new component has no file"
    );
}

pub async fn errors_have_codes(start: Starter) {
    let app = start(test_config()).await;
    // Each refused request's whole `errors` list: message, code, and where it points.
    let mut refusals = serde_json::Map::new();
    for query in [
        "{ nonsense }",
        "{ models(first: 101) { totalCount } }",
        "{ models(first: -1) { totalCount } }",
        "{ models(after: \"bm90IGEgY3Vyc29y\") { totalCount } }",
        // Parameter types are names of types.
        "mutation { createTransformation(input: {id: \"t\", parameterTypes: {axis: 1}}) { id } }",
        "{ services(filter: {needs: {maxRam: -2}}) { totalCount } }",
    ] {
        let body = app.gql(query, json!({})).await;
        assert!(body["data"].is_null(), "{query}: {body}");
        refusals.insert(query.into(), body["errors"].clone());
    }
    super::assert_json_snapshot("graphql_errors", &serde_json::Value::Object(refusals), &[]);
    // A body that is not JSON is a 400 with a GraphQL-shaped error.
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    // Unknown routes and methods answer in JSON.
    let response = app.get("/nowhere").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["detail"],
        "Not Found"
    );
    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 405);
}

pub async fn malformed_library_requirements_are_refused(start: Starter) {
    let app = start(test_config()).await;
    let create = "mutation($v: String!) { createService(input: {id: \"svc\", needs: {preinstalledLibraries: [{name: \"tensorflow\", version: $v}]}}) { id } }";
    for (bad, at) in [
        (">=>=2", "character 1"),
        ("==", "character 1"),
        (">=2,,<3", "character 5"),
    ] {
        let answer = app.gql(create, json!({ "v": bad })).await;
        let error = &answer["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "INVALID_INPUT",
            "{bad:?}: {answer}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(at),
            "{bad:?}: the position is named: {message}"
        );
        assert_eq!(
            app.ok("{ service(id: \"svc\") { id } }", json!({})).await["service"],
            json!(null),
            "{bad:?}: nothing was created"
        );
    }
    // Text that is no specifier is what the original's clients send: kept as it is.
    app.ok(create, json!({ "v": "latest" })).await;
    let update = "mutation($v: String!) { updateService(id: \"svc\", input: {needs: {preinstalledLibraries: [{name: \"tensorflow\", version: $v}]}}) { id } }";
    assert_eq!(
        app.error_code(update, json!({ "v": ">=2,<" })).await,
        "INVALID_INPUT"
    );
    let kept = app
        .ok(
            "{ service(id: \"svc\") { needs { preinstalledLibraries { version } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        kept["service"]["needs"]["preinstalledLibraries"][0]["version"],
        "latest"
    );

    // The original REST routes refuse it the same way.
    let body = json!({"id": "rest", "description": "", "needs": {"preinstalled_libraries": {"torch": ">=>=2"}}});
    let response = app
        .client
        .post(app.url("/service"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let refusal: serde_json::Value = response.json().await.unwrap();
    assert_eq!(refusal["code"], "INVALID_INPUT", "{refusal}");
    assert_eq!(app.get("/service/rest").await.status(), 404);
}

pub async fn stale_writes_are_refused_with_the_current_revision(start: Starter) {
    let app = start(test_config()).await;
    let created = app
        .ok(
            "mutation { createService(input: {id: \"svc\", description: \"first\"}) { revision } }",
            json!({}),
        )
        .await;
    assert_eq!(created["createService"]["revision"], 0);
    let update = "mutation($r: Long) { updateService(id: \"svc\", input: {description: \"second\"}, expectedRevision: $r) { revision description } }";
    let updated = app.ok(update, json!({ "r": 0 })).await;
    assert_eq!(updated["updateService"]["revision"], 1);

    // A second editor still holding revision 0 loses nothing and learns where the component is.
    let stale = app
        .gql(update.replace("second", "lost").as_str(), json!({ "r": 0 }))
        .await;
    assert_eq!(
        stale["errors"][0]["extensions"]["code"], "CONFLICT",
        "{stale}"
    );
    assert_eq!(
        stale["errors"][0]["extensions"]["currentRevision"], 1,
        "{stale}"
    );
    let kept = app
        .ok(
            "{ service(id: \"svc\") { description revision } }",
            json!({}),
        )
        .await;
    assert_eq!(
        kept["service"],
        json!({"description": "second", "revision": 1})
    );

    // Uploads and locks move the revision and honour it too.
    let uploaded = app
        .upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file, expectedRevision: 1) { revision } }",
            json!({}),
            b"code".to_vec(),
            "svc.zip",
        )
        .await;
    assert_eq!(uploaded.status(), 200);
    let uploaded: serde_json::Value = uploaded.json().await.unwrap();
    assert_eq!(
        uploaded["data"]["uploadServiceFile"]["revision"], 2,
        "{uploaded}"
    );
    let lock =
        "mutation($r: Long) { lockService(id: \"svc\", expectedRevision: $r) { revision locked } }";
    assert_eq!(app.error_code(lock, json!({ "r": 1 })).await, "CONFLICT");
    let locked = app.ok(lock, json!({ "r": 2 })).await;
    assert_eq!(
        locked["lockService"],
        json!({"revision": 3, "locked": true})
    );
    // Without a revision a write is unconditional, as before.
    app.ok(
        "mutation { createService(input: {id: \"other\"}) { id } }",
        json!({}),
    )
    .await;
    app.ok(
        "mutation { updateService(id: \"other\", input: {description: \"x\"}) { id } }",
        json!({}),
    )
    .await;

    // An alias naming a version is a write of that version.
    app.ok(
        "mutation { createModel(input: {name: \"m\", version: \"1\"}) { name } }",
        json!({}),
    )
    .await;
    let aliased = app
        .ok("mutation { setModelAlias(name: \"m\", alias: \"production\", version: \"1\") { revision } }", json!({}))
        .await;
    assert_eq!(aliased["setModelAlias"]["revision"], 1);
    // Alias moves are made as of the revision of the version they name (the target; deleting, the version named).
    app.ok(
        "mutation { createModel(input: {name: \"m\", version: \"2\"}) { name } }",
        json!({}),
    )
    .await;
    app.ok(
        "mutation { updateModel(name: \"m\", version: \"2\", input: {description: \"better\"}) { revision } }",
        json!({}),
    )
    .await;
    let move_to_2 = "mutation($r: Long) { setModelAlias(name: \"m\", alias: \"production\", version: \"2\", expectedRevision: $r) { revision } }";
    let stale = app.gql(move_to_2, json!({ "r": 0 })).await;
    assert_eq!(
        stale["errors"][0]["extensions"]["code"], "CONFLICT",
        "{stale}"
    );
    assert_eq!(
        stale["errors"][0]["extensions"]["currentRevision"], 1,
        "{stale}"
    );
    let still = app
        .ok(
            "{ model(name: \"m\", alias: \"production\") { version } }",
            json!({}),
        )
        .await;
    assert_eq!(
        still["model"]["version"], "1",
        "the refused move changed nothing"
    );
    let moved = app.ok(move_to_2, json!({ "r": 1 })).await;
    assert_eq!(moved["setModelAlias"]["revision"], 2);
    let delete = "mutation($r: Long) { deleteModelAlias(name: \"m\", alias: \"production\", expectedRevision: $r) }";
    assert_eq!(app.error_code(delete, json!({ "r": 1 })).await, "CONFLICT");
    app.ok(delete, json!({ "r": 2 })).await;

    // REST: If-Match with the revision in quotes, 412 when stale, the new revision as the ETag.
    let put = |tag: Option<&str>, description: &str| {
        let mut request = app
            .client
            .put(app.url("/service/meta/other"))
            .json(&json!({"description": description, "needs": {}}));
        if let Some(tag) = tag {
            request = request.header("if-match", tag);
        }
        request.send()
    };
    let fresh = put(Some("\"1\""), "via REST").await.unwrap();
    assert_eq!(fresh.status(), 204);
    assert_eq!(fresh.headers()["etag"], "\"2\"");
    // Strong comparison: a weak tag never matches, even of the current revision; nor a tag that is no revision.
    for stale_tag in ["\"1\"", "W/\"2\"", "\"02\"", "\"not-a-revision\""] {
        let refused = put(Some(stale_tag), "lost").await.unwrap();
        assert_eq!(refused.status(), 412, "{stale_tag}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "CONFLICT", "{stale_tag}: {body}");
    }
    assert_eq!(put(Some("*"), "any").await.unwrap().status(), 204);
    let now = app
        .ok(
            "{ service(id: \"other\") { description revision } }",
            json!({}),
        )
        .await;
    assert_eq!(now["service"], json!({"description": "any", "revision": 3}));
}
