//! `/metrics`: what an operator's Prometheus scrapes.

mod common;

use common::{Options, bytes};
use serde_json::json;

/// The value of the sample whose line starts with `prefix`, or 0.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn requests_operations_bytes_and_errors_are_counted() {
    let app = common::embedded(Options::default()).await;
    app.ok(
        "mutation CreateOne { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    let response = app
        .upload(
            "mutation Upload($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
            json!({}),
            bytes(12_345, 1),
            "f.zip",
        )
        .await;
    assert_eq!(response.status(), 200);
    let download = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(download.len(), 12_345);
    assert_eq!(app.get("/service/missing").await.status(), 404);
    app.gql("query Broken { service(id: \"\") { id } }", json!({}))
        .await;

    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, "repository_file_bytes_total{direction=\"upload\"}"),
        12_345.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "repository_file_bytes_total{direction=\"download\"}"),
        12_345.0
    );
    assert_eq!(
        sample(
            &text,
            "repository_http_requests_total{method=\"GET\",route=\"/service/{id}\",status=\"404\"}"
        ),
        1.0,
        "by route template, never the raw path: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "repository_graphql_operations_total{operation=\"CreateOne\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "repository_graphql_operations_total{operation=\"Broken\",outcome=\"INVALID_INPUT\"}"
        ),
        1.0
    );
    assert!(text.contains("repository_graphql_operation_duration_seconds_bucket"));
    assert!(text.contains("repository_http_request_duration_seconds_bucket"));
    assert!(!text.contains("route=\"/service/missing\""));
}
