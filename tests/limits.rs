//! Limits over HTTP: GraphQL depth, complexity and aliases, introspection, CSRF prevention, CORS, slow bodies.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Options, TestApp, bytes};
use serde_json::json;

async fn app_with(flags: &[&str]) -> TestApp {
    common::embedded(Options {
        flags: flags.iter().map(|f| f.to_string()).collect(),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn graphql_depth_complexity_and_aliases_are_bounded() {
    let app = app_with(&["--graphql-max-depth", "4", "--graphql-max-complexity", "20"]).await;
    assert_eq!(
        app.error_code(
            "{ services { edges { node { needs { availableModels { model { name } } } } } } }",
            json!({})
        )
        .await,
        "INVALID_INPUT",
        "deeper than 4"
    );
    let wide: String = (0..25)
        .map(|i| format!("f{i}: services {{ totalCount }} "))
        .collect();
    assert_eq!(
        app.error_code(&format!("{{ {wide} }}"), json!({})).await,
        "INVALID_INPUT"
    );
    app.ok("{ services { totalCount } }", json!({})).await;

    let app = app_with(&[]).await;
    let aliases: String = (0..31)
        .map(|i| format!("a{i}: services {{ totalCount }} "))
        .collect();
    let body = app.gql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("31 aliases"),
        "{body}"
    );
    let aliases: String = (0..30)
        .map(|i| format!("a{i}: services {{ totalCount }} "))
        .collect();
    app.ok(&format!("{{ {aliases} }}"), json!({})).await;
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let open = app_with(&[]).await;
    open.ok("{ __schema { queryType { name } } }", json!({}))
        .await;
    let closed = app_with(&["--graphql-introspection", "false"]).await;
    let body = closed
        .gql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(
        body["data"]["__schema"],
        serde_json::Value::Null,
        "the schema is hidden: {body}"
    );
    closed.ok("{ services { totalCount } }", json!({})).await;
}

#[tokio::test]
async fn cross_site_simple_requests_are_refused() {
    let app = app_with(&[]).await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    // A multipart upload without a preflight-forcing header: what a form on another site could send.
    let operations = json!({
        "query": "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
        "variables": { "file": null }
    });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(bytes(1000, 1)).file_name("f.zip"),
        );
    let response = app
        .client
        .post(app.url("/graphql"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    let file = app
        .ok("{ service(id: \"svc\") { file { size } } }", json!({}))
        .await;
    assert_eq!(
        file["service"]["file"],
        serde_json::Value::Null,
        "nothing was stored"
    );

    let get = app.get("/graphql?query=%7B__typename%7D").await;
    assert_eq!(
        get.status(),
        400,
        "a GET without the header, as an <img> on another site would send"
    );
    let text = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body(json!({"query": "{ __typename }"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 400);

    let off = app_with(&["--csrf-prevention", "false"]).await;
    assert_eq!(
        off.get("/graphql?query=%7B__typename%7D").await.status(),
        200
    );
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let app = app_with(&["--cors-allowed-origins", "https://dash.example.org"]).await;
    let allowed = preflight(&app, "https://dash.example.org").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://dash.example.org"
    );
    let other = preflight(&app, "https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let none = app_with(&[]).await;
    let response = preflight(&none, "https://dash.example.org").await.unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off() {
    let app = app_with(&["--body-idle-timeout-secs", "1"]).await;
    let addr = app.addr;
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"query\""
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
