//! Listings over catalogues that change and catalogues drawn at random: what a store's indexes and query pushdown
//! narrow must never change an answer.

use std::collections::BTreeSet;

use component_repository::domain::{
    Component, ComponentFilter, ComponentKey, Device, Kind, LibraryWanted, Needs, NeedsFilter,
    ServiceSpec, Spec,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use super::Starter;
use crate::common::{TestApp, test_config};

async fn create_service(app: &TestApp, id: &str, needs: Value) {
    app.ok(
        "mutation($id: ID!, $needs: NeedsInput!) { createService(input: {id: $id, needs: $needs}) { id } }",
        json!({ "id": id, "needs": needs }),
    )
    .await;
}

async fn delete_service(app: &TestApp, id: &str) {
    app.ok(
        "mutation($id: ID!) { deleteService(id: $id) }",
        json!({ "id": id }),
    )
    .await;
}

fn edge_ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn finds_any_version_and_overlapping_ranges(start: Starter) {
    let app = start(test_config()).await;
    let tf = |v: &str| json!({"preinstalledLibraries": [{"name": "tensorflow", "version": v}]});
    create_service(&app, "any", tf("*")).await;
    create_service(&app, "unversioned", tf("")).await;
    create_service(&app, "from-2.12", tf(">=2.12")).await;
    create_service(&app, "from-3", tf(">=3")).await;
    create_service(&app, "series-2", tf("==2.*")).await;
    let search = |version: &str| json!({"needs": {"libraries": [{"name": "tensorflow", "version": version}]}});
    let query = "query($f: ComponentFilter) { services(filter: $f, first: 100) { totalCount edges { node { id } } } }";
    for (version, expected) in [
        (
            ">=2.0,<3",
            vec!["any", "from-2.12", "series-2", "unversioned"],
        ),
        ("<2", vec!["any", "unversioned"]),
        (
            ">=2",
            vec!["any", "from-2.12", "from-3", "series-2", "unversioned"],
        ),
        (
            "2.13.0",
            vec!["any", "from-2.12", "series-2", "unversioned"],
        ),
        ("~=3.1", vec!["any", "from-2.12", "from-3", "unversioned"]),
    ] {
        let data = app.ok(query, json!({ "f": search(version) })).await;
        assert_eq!(edge_ids(&data["services"]), expected, "search {version}");
        assert_eq!(data["services"]["totalCount"], expected.len());
    }
    app.stop().await;
}

/// Items that exist for the whole walk through the pages are each seen exactly once, in order, however the
/// catalogue changes between pages.
pub async fn paginates_while_the_store_changes(start: Starter) {
    let app = start(test_config()).await;
    let throughout: Vec<String> = (0..30).map(|i| format!("svc-{:03}", i * 10)).collect();
    for id in &throughout {
        create_service(&app, id, json!({})).await;
    }
    let query = "query($after: String) { services(first: 4, after: $after) {
        pageInfo { hasNextPage endCursor } edges { node { id } } } }";
    let mut after = Value::Null;
    let mut seen: Vec<String> = Vec::new();
    let mut page = 0;
    loop {
        let data = app.ok(query, json!({ "after": after })).await;
        let connection = &data["services"];
        seen.extend(edge_ids(connection));
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
        // Between pages: new items before and after the cursor, and some of them gone again.
        let newcomer = |page: i32, offset: i32| format!("svc-{:03}-p{page}", page * 40 + offset);
        for offset in [5, 155, 205] {
            create_service(&app, &newcomer(page, offset), json!({})).await;
        }
        if page % 2 == 1 {
            delete_service(&app, &newcomer(page - 1, 155)).await;
        }
        page += 1;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in order, each item once");
    let seen: BTreeSet<&String> = seen.iter().collect();
    for id in &throughout {
        assert!(seen.contains(id), "{id} existed throughout but was skipped");
    }
    app.stop().await;
}

const LIBRARIES: [&str; 3] = ["tensorflow", "torch", "numpy"];
const REQUIREMENTS: [&str; 9] = [
    "2.13.0",
    ">=2.12,<3",
    ">=3",
    "*",
    "~=2.12",
    "<2",
    "1.26.4",
    "==2.*",
    "latest",
];
const INSTALLED: [&str; 4] = ["2.13.1", "3.1.0", "1.26.4", "latest"];
const MODELS: [(&str, &str); 3] = [("yolo", "v8"), ("yolo", "v5"), ("bert", "base")];

fn pick<T: Clone + std::fmt::Debug>(items: &'static [T]) -> impl Strategy<Value = T> {
    (0..items.len()).prop_map(move |i| items[i].clone())
}

fn needs_strategy() -> impl Strategy<Value = Needs> {
    (
        prop::option::of(pick(&[0.5, 2.0, 8.0])),
        any::<bool>(),
        prop::option::of(pick(&[4.0, 12.0])),
        prop::collection::btree_map(pick(&LIBRARIES), pick(&REQUIREMENTS), 0..3),
        prop::collection::btree_map(pick(&["yolo", "bert"]), pick(&["v8", "v5", "base"]), 0..2),
    )
        .prop_map(|(ram, gpu, gpu_memory, libraries, models)| Needs {
            storage: None,
            ram,
            gpu,
            gpu_memory,
            preinstalled_libraries: libraries
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            available_models: models
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
}

fn device_strategy() -> impl Strategy<Value = Device> {
    (
        any::<bool>(),
        prop::option::of(pick(&[1.0, 4.0, 16.0])),
        prop::option::of(pick(&[8.0, 24.0])),
        prop::collection::btree_map(pick(&LIBRARIES), pick(&INSTALLED), 0..4),
        prop::collection::vec(pick(&MODELS), 0..3),
    )
        .prop_map(|(gpu, ram, gpu_memory, libraries, models)| Device {
            gpu,
            ram,
            gpu_memory,
            storage: None,
            libraries: libraries
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            models: models
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            platform: None,
        })
}

fn filter_strategy() -> impl Strategy<Value = NeedsFilter> {
    (
        prop::option::of(any::<bool>()),
        prop::option::of(pick(&[1.0, 4.0])),
        prop::collection::vec(
            (
                pick(&LIBRARIES),
                prop::option::of(pick(&[">=2", "<2", "2.13.0", ">=2.0,<3", "==3.*"])),
            ),
            0..2,
        ),
        prop::option::of(device_strategy()),
    )
        .prop_map(|(gpu, max_ram, libraries, runnable_on)| NeedsFilter {
            gpu,
            max_ram,
            libraries: libraries
                .into_iter()
                .map(|(name, version)| LibraryWanted {
                    name: name.to_string(),
                    version: version.map(str::to_string),
                })
                .collect(),
            runnable_on,
            ..NeedsFilter::default()
        })
}

/// Draws one value; cases are drawn up front because each is checked against a server, asynchronously.
fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("a value").current()
}

fn libraries_json(map: &std::collections::BTreeMap<String, String>) -> Value {
    map.iter()
        .map(|(name, version)| json!({"name": name, "version": version}))
        .collect()
}

fn filter_json(filter: &NeedsFilter) -> Value {
    let mut needs = json!({
        "gpu": filter.gpu,
        "maxRam": filter.max_ram,
        "libraries": filter.libraries.iter().map(|l| json!({"name": l.name, "version": l.version})).collect::<Vec<_>>(),
    });
    if let Some(device) = &filter.runnable_on {
        needs["runnableOn"] = device_json(device);
    }
    json!({ "needs": needs })
}

fn device_json(device: &Device) -> Value {
    json!({
        "gpu": device.gpu,
        "ram": device.ram,
        "gpuMemory": device.gpu_memory,
        "libraries": libraries_json(&device.libraries),
        "models": device.models.iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
    })
}

/// Every id of a listing, walked in pages of 3, and the total the first page reports.
async fn walk(app: &TestApp, field: &str, query: &str, variables: Value) -> (Vec<String>, Value) {
    let mut after = Value::Null;
    let mut ids = Vec::new();
    let mut total = Value::Null;
    loop {
        let mut variables = variables.clone();
        variables["after"] = after;
        let data = app.ok(query, variables).await;
        let connection = &data[field];
        if total.is_null() {
            total = connection["totalCount"].clone();
        }
        ids.extend(edge_ids(connection));
        if connection["pageInfo"]["hasNextPage"] == false {
            return (ids, total);
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
}

/// Random catalogues and filters: pages and totalCount agree with testing every component with the domain's own
/// filter, whatever the store narrows by index or query first.
pub async fn counts_match_a_brute_force_filter(start: Starter) {
    let app = start(test_config()).await;
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut catalogue = Vec::new();
    for i in 0..40 {
        let needs = draw(&mut runner, &needs_strategy());
        let id = format!("random-{i:02}");
        create_service(
            &app,
            &id,
            json!({
                "ram": needs.ram,
                "gpu": needs.gpu,
                "gpuMemory": needs.gpu_memory,
                "preinstalledLibraries": libraries_json(&needs.preinstalled_libraries),
                "availableModels": libraries_json(&needs.available_models),
            }),
        )
        .await;
        let key = ComponentKey::with_id(Kind::Service, id).unwrap();
        let spec = Spec::Service(ServiceSpec {
            description: String::new(),
            needs,
        });
        catalogue.push(Component::new(key, spec, component_repository::domain::now()).unwrap());
    }
    let listing = "query($f: ComponentFilter, $after: String) { services(filter: $f, first: 3, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } }";
    let runnable = "query($d: DeviceInput!, $after: String) { runnableOn(device: $d, kinds: [SERVICE], first: 3, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { ... on Service { id } } } } }";
    for _ in 0..24 {
        let needs = draw(&mut runner, &filter_strategy());
        let filter = ComponentFilter {
            needs: needs.clone(),
            ..ComponentFilter::default()
        };
        let expected: Vec<String> = catalogue
            .iter()
            .filter(|c| filter.matches(c))
            .map(|c| c.key.path_segments()[0].to_owned())
            .collect();
        let (ids, total) = walk(
            &app,
            "services",
            listing,
            json!({ "f": filter_json(&needs) }),
        )
        .await;
        assert_eq!(ids, expected, "filter {needs:?}");
        assert_eq!(total, expected.len(), "totalCount of {needs:?}");

        let device = draw(&mut runner, &device_strategy());
        let filter = ComponentFilter {
            needs: NeedsFilter {
                runnable_on: Some(device.clone()),
                ..NeedsFilter::default()
            },
            ..ComponentFilter::default()
        };
        let expected: Vec<String> = catalogue
            .iter()
            .filter(|c| filter.matches(c))
            .map(|c| c.key.path_segments()[0].to_owned())
            .collect();
        let (ids, total) = walk(
            &app,
            "runnableOn",
            runnable,
            json!({ "d": device_json(&device) }),
        )
        .await;
        assert_eq!(ids, expected, "device {device:?}");
        assert_eq!(total, expected.len(), "totalCount on {device:?}");
    }
    app.stop().await;
}
