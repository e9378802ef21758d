use serde_json::{Value, json};

use super::Starter;
use crate::common::{TestApp, test_config};

async fn service(app: &TestApp, id: &str, needs: Value) {
    app.ok(
        "mutation($id: ID!, $needs: NeedsInput!) { createService(input: {id: $id, description: \"svc\", needs: $needs}) { id } }",
        json!({ "id": id, "needs": needs }),
    )
    .await;
}

/// Ids of the nodes of a connection.
fn ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["node"]["id"]
                .as_str()
                .or(e["node"]["name"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn services_matching(app: &TestApp, filter: Value) -> Vec<String> {
    let data = app
        .ok(
            "query($f: ComponentFilter) { services(filter: $f, first: 100) { totalCount edges { node { id } } } }",
            json!({ "f": filter }),
        )
        .await;
    let found = ids(&data["services"]);
    assert_eq!(
        data["services"]["totalCount"],
        found.len(),
        "totalCount counts matches"
    );
    found
}

pub async fn filters_by_needs(start: Starter) {
    let app = start(test_config()).await;
    service(&app, "small", json!({"ram": 0.5, "storage": 1})).await;
    service(
        &app,
        "big-gpu",
        json!({"ram": 16, "storage": 20, "gpu": true}),
    )
    .await;
    service(
        &app,
        "uses-yolo",
        json!({"ram": 2, "availableModels": [{"name": "yolo", "version": "v8"}]}),
    )
    .await;
    service(&app, "nothing", json!({})).await;

    assert_eq!(
        services_matching(&app, json!({"needs": {"gpu": true}})).await,
        ["big-gpu"]
    );
    assert_eq!(
        services_matching(&app, json!({"needs": {"gpu": false}})).await,
        ["nothing", "small", "uses-yolo"]
    );
    assert_eq!(
        services_matching(&app, json!({"needs": {"maxRam": 2}})).await,
        ["nothing", "small", "uses-yolo"]
    );
    assert_eq!(
        services_matching(&app, json!({"needs": {"maxStorage": 1}})).await,
        ["nothing", "small", "uses-yolo"]
    );
    assert_eq!(
        services_matching(&app, json!({"needs": {"maxRam": 0.5, "maxStorage": 0.5}})).await,
        ["nothing"]
    );
    assert_eq!(
        services_matching(&app, json!({"needs": {"models": [{"name": "yolo"}]}})).await,
        ["uses-yolo"]
    );
    assert!(
        services_matching(
            &app,
            json!({"needs": {"models": [{"name": "yolo", "version": "v5"}]}})
        )
        .await
        .is_empty()
    );
    assert_eq!(
        services_matching(&app, json!({"search": "YOLO"})).await,
        ["uses-yolo"]
    );
    assert_eq!(
        services_matching(&app, json!({"search": "svc"}))
            .await
            .len(),
        4,
        "search covers descriptions"
    );
}

pub async fn filters_by_library_versions_as_versions(start: Starter) {
    let app = start(test_config()).await;
    let tf = |v: &str| json!({"preinstalledLibraries": [{"name": "tensorflow", "version": v}]});
    service(&app, "tf-2.9", tf("2.9.0")).await;
    service(&app, "tf-2.12", tf("2.12.0")).await;
    service(&app, "tf-2.15", tf("2.15.1")).await;
    service(&app, "tf-3", tf("3.0.0")).await;
    service(
        &app,
        "torch",
        json!({"preinstalledLibraries": [{"name": "torch", "version": "2.1.0"}]}),
    )
    .await;

    let with = |version: Option<&str>| json!({"needs": {"libraries": [{"name": "tensorflow", "version": version}]}});
    assert_eq!(
        services_matching(&app, with(None)).await,
        ["tf-2.12", "tf-2.15", "tf-2.9", "tf-3"]
    );
    // "2.9.0" > "2.12" as strings, but not as versions.
    assert_eq!(
        services_matching(&app, with(Some(">=2.12,<3"))).await,
        ["tf-2.12", "tf-2.15"]
    );
    assert_eq!(
        services_matching(&app, with(Some("2.12"))).await,
        ["tf-2.12"],
        "2.12 equals 2.12.0"
    );
    assert_eq!(
        services_matching(&app, with(Some("<2.10"))).await,
        ["tf-2.9"]
    );
    assert_eq!(
        services_matching(&app, with(Some("~=2.12"))).await,
        ["tf-2.12", "tf-2.15"]
    );
}

pub async fn filters_models_and_inferencers(start: Starter) {
    let app = start(test_config()).await;
    for (name, version, library) in [
        ("fall-detection", "pilot-2-1", "keras"),
        ("fall-detection", "pilot-3", "keras"),
        ("fall", "v1", "torch"),
        ("yolo", "v8", "Torch"),
    ] {
        app.ok(
            "mutation($n: String!, $v: String!, $l: String!) { createModel(input: {name: $n, version: $v, library: $l}) { name } }",
            json!({ "n": name, "v": version, "l": library }),
        )
        .await;
    }
    let versions = app
        .ok(
            "{ models(filter: {name: \"fall-detection\"}) { totalCount edges { node { version } } } }",
            json!({}),
        )
        .await;
    assert_eq!(versions["models"]["totalCount"], 2);
    assert_eq!(
        versions["models"]["edges"][0]["node"]["version"],
        "pilot-2-1"
    );
    assert_eq!(versions["models"]["edges"][1]["node"]["version"], "pilot-3");
    let torch = app
        .ok(
            "{ models(filter: {library: \"torch\"}) { edges { node { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ids(&torch["models"]),
        ["fall", "yolo"],
        "library matches case-insensitively; sorted by name"
    );
    let search = app
        .ok(
            "{ models(filter: {search: \"pilot\"}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(search["models"]["totalCount"], 2);

    for (id, library) in [("inf.keras", "keras"), ("inf.torch", "torch")] {
        app.ok(
            "mutation($id: ID!, $l: String!) { createInferencer(input: {id: $id, library: $l}) { id } }",
            json!({ "id": id, "l": library }),
        )
        .await;
    }
    let found = app
        .ok(
            "{ inferencers(filter: {library: \"torch\"}) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(ids(&found["inferencers"]), ["inf.torch"]);
}

pub async fn paginates_with_cursors(start: Starter) {
    let app = start(test_config()).await;
    for i in 0..25 {
        service(&app, &format!("svc-{i:02}"), json!({})).await;
    }
    let query = "query($after: String) { services(first: 10, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id } } } }";
    let mut after = Value::Null;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let data = app.ok(query, json!({ "after": after })).await;
        let connection = &data["services"];
        assert_eq!(connection["totalCount"], 25);
        seen.extend(ids(connection));
        pages += 1;
        let edges = connection["edges"].as_array().unwrap();
        assert_eq!(
            connection["pageInfo"]["endCursor"],
            edges.last().unwrap()["cursor"]
        );
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("svc-{i:02}")).collect();
    assert_eq!(seen, expected, "every item once, in order");

    let default_page = app
        .ok("{ services { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(
        default_page["services"]["edges"].as_array().unwrap().len(),
        20
    );
    let models_cursor = app
        .ok(
            "{ services(first: 1) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await;
    let cursor = models_cursor["services"]["pageInfo"]["endCursor"].clone();
    assert_eq!(
        app.error_code(
            "query($c: String) { models(after: $c) { totalCount } }",
            json!({ "c": cursor })
        )
        .await,
        "INVALID_INPUT",
        "a cursor of one listing is refused by another"
    );
}

const DEVICE_QUERY: &str = "query($device: DeviceInput!, $kinds: [RunnableKind!], $first: Int, $after: String) {
    runnableOn(device: $device, kinds: $kinds, first: $first, after: $after) {
        totalCount pageInfo { hasNextPage endCursor }
        edges { node { __typename ... on Transformation { id } ... on Service { id } ... on Inferencer { id } } } } }";

async fn seed_runnable(app: &TestApp) {
    // Two root fields in one mutation document, run in order.
    app.ok(
        "mutation { a: createTransformation(input: {id: \"tr.any\", needs: {storage: 0.1}}) { id }
                    b: createInferencer(input: {id: \"inf.big\", needs: {ram: 64}}) { id } }",
        json!({}),
    )
    .await;
    let tf = json!({"ram": 1, "preinstalledLibraries": [{"name": "tensorflow", "version": ">=2.12,<3"}]});
    service(app, "svc.light", tf).await;
    service(app, "svc.gpu", json!({"gpu": true})).await;
    service(
        app,
        "svc.old-tf",
        json!({"preinstalledLibraries": [{"name": "tensorflow", "version": "2.9.0"}]}),
    )
    .await;
    service(
        app,
        "svc.yolo",
        json!({"availableModels": [{"name": "yolo", "version": "v8"}]}),
    )
    .await;
}

pub async fn runnable_on_matches_devices(start: Starter) {
    let app = start(test_config()).await;
    seed_runnable(&app).await;

    let edge_device = json!({"gpu": false, "ram": 4, "storage": 8,
        "libraries": [{"name": "tensorflow", "version": "2.13.1"}],
        "models": [{"name": "yolo", "version": "v8"}]});
    let data = app.ok(DEVICE_QUERY, json!({ "device": edge_device })).await;
    let found = &data["runnableOn"];
    assert_eq!(
        ids(found),
        ["tr.any", "svc.light", "svc.yolo"],
        "ordered by kind, then id"
    );
    assert_eq!(found["edges"][0]["node"]["__typename"], "Transformation");
    assert_eq!(found["totalCount"], 3);
    // What the device lacks for the others, need by need: the same matching, said out loud.
    let data = app
        .ok(
            "query($d: DeviceInput!) { services(first: 10) { edges { node { id unmetNeeds(device: $d) { need wanted has } } } } }",
            json!({ "d": edge_device }),
        )
        .await;
    for edge in data["services"]["edges"].as_array().unwrap() {
        let node = &edge["node"];
        let runnable = ["svc.light", "svc.yolo"].contains(&node["id"].as_str().unwrap());
        assert_eq!(
            node["unmetNeeds"].as_array().unwrap().is_empty(),
            runnable,
            "{node}"
        );
        if node["id"] == "svc.gpu" {
            assert!(
                node["unmetNeeds"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"need": "gpu", "wanted": "a GPU", "has": "no GPU"})),
                "{node}"
            );
        }
    }

    let gpu_server =
        json!({"gpu": true, "ram": 128, "libraries": [{"name": "tensorflow", "version": "2.9.0"}]});
    let data = app.ok(DEVICE_QUERY, json!({ "device": gpu_server })).await;
    assert_eq!(
        ids(&data["runnableOn"]),
        ["tr.any", "svc.gpu", "svc.old-tf", "inf.big"]
    );

    let data = app
        .ok(
            DEVICE_QUERY,
            json!({ "device": gpu_server, "kinds": ["INFERENCER"] }),
        )
        .await;
    assert_eq!(ids(&data["runnableOn"]), ["inf.big"]);

    // The same device filter on one listing.
    let data = app
        .ok(
            "query($d: DeviceInput) { services(filter: {needs: {runnableOn: $d}}) { edges { node { id } } } }",
            json!({ "d": edge_device }),
        )
        .await;
    assert_eq!(ids(&data["services"]), ["svc.light", "svc.yolo"]);
}

pub async fn runnable_on_paginates_across_kinds(start: Starter) {
    let app = start(test_config()).await;
    seed_runnable(&app).await;
    let anything = json!({"gpu": true, "libraries": [{"name": "tensorflow", "version": "2.12.0"}],
        "models": [{"name": "yolo", "version": "v8"}]});
    let mut after = Value::Null;
    let mut seen = Vec::new();
    loop {
        let data = app
            .ok(
                DEVICE_QUERY,
                json!({ "device": anything, "first": 2, "after": after }),
            )
            .await;
        let page = &data["runnableOn"];
        assert_eq!(page["totalCount"], 5);
        seen.extend(ids(page));
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(
        seen,
        ["tr.any", "svc.gpu", "svc.light", "svc.yolo", "inf.big"]
    );
}

pub async fn available_models_resolve_to_models(start: Starter) {
    let app = start(test_config()).await;
    app.ok("mutation { createModel(input: {name: \"yolo\", version: \"v8\", library: \"torch\"}) { name } }", json!({}))
        .await;
    service(&app, "svc", json!({"availableModels": [{"name": "yolo", "version": "v8"}, {"name": "ghost", "version": "1"}]}))
        .await;
    let data = app
        .ok("{ service(id: \"svc\") { needs { availableModels { name version model { name version library } } } } }", json!({}))
        .await;
    assert_eq!(
        data["service"]["needs"]["availableModels"],
        json!([
            {"name": "ghost", "version": "1", "model": null},
            {"name": "yolo", "version": "v8", "model": {"name": "yolo", "version": "v8", "library": "torch"}}
        ])
    );
}
