//! `/openapi.json` describes the REST routes the server has.

mod common;

use common::test_config;

#[tokio::test]
async fn openapi_describes_every_rest_route() {
    let app = common::embedded(test_config()).await;
    let document: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        21,
        "4 kinds x (collection, item, meta, signatures) + /model/meta + /blobs/sha256/{{hex}} + /uploads and /uploads/{{id}} + /pipelines/resolve: {:?}",
        paths.keys()
    );
    // Every documented operation is routed: none falls through to the router's 404 or 405.
    for (path, item) in paths {
        let concrete = path
            .replace("{name}", "n")
            .replace("{version}", "v")
            .replace("{id}", "i")
            .replace("{hex}", &"0".repeat(64));
        for method in item.as_object().unwrap().keys() {
            let request = app
                .client
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete));
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert_ne!(
                body["detail"], "Not Found",
                "{method} {path} is documented but not routed"
            );
        }
    }
    // Downloads say how to pick a variant, and the digest route is there.
    for download in ["/model/{name}/{version}", "/service/{id}"] {
        let names: Vec<&str> = paths[download]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for wanted in ["platform", "accelerator", "accelerator_version"] {
            assert!(names.contains(&wanted), "{download}: {names:?}");
        }
    }
    // The tus routes, with their protocol's statuses.
    assert!(paths["/uploads"]["options"].is_object());
    assert!(paths["/uploads/{id}"]["patch"]["responses"]["460"].is_object());
    // The pipeline resolution: its body, its answer (GraphQL's type, field for field) and its refusals.
    let resolve = &paths["/pipelines/resolve"]["post"];
    for status in ["200", "400", "413", "415"] {
        assert!(resolve["responses"][status].is_object(), "{status}");
    }
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["PipelineRequest"]["required"],
        serde_json::json!(["device"])
    );
    let mut answer: Vec<&str> = schemas["PipelineResolution"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    answer.sort();
    assert_eq!(answer, ["components", "fits", "lock", "problems", "totals"]);
    for nested in [
        "PipelineComponent",
        "PipelineFile",
        "PipelineTotals",
        "PipelineProblem",
    ] {
        assert!(schemas[nested]["properties"].is_object(), "{nested}");
    }
    let blob = &paths["/blobs/sha256/{hex}"]["get"];
    assert_eq!(blob["parameters"][0]["name"], "hex");
    assert!(blob["responses"]["404"].is_object());
}
