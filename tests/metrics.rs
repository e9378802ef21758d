//! `/metrics`: what an operator's Prometheus scrapes.

mod common;

use common::{bytes, config_with, test_config};
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
    let app = common::embedded(test_config()).await;
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

/// Operation names come from clients: 2,000 distinct ones, names the document does not define and megabyte-long
/// ones leave `/metrics` small, with a bounded set of names and the rest under `other`.
#[tokio::test]
async fn client_chosen_operation_names_stay_bounded() {
    use futures_util::StreamExt;
    let app = common::embedded(test_config()).await;
    let app = &app;
    let send = |query: String, operation_name: String| async move {
        let response = app
            .client
            .post(app.url("/graphql"))
            .json(&json!({ "query": query, "operationName": operation_name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };
    futures_util::stream::iter(0..2_000)
        .map(|i| send(format!("query Op{i} {{ __typename }}"), format!("Op{i}")))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    // Names the document does not define, and long ones.
    for i in 0..5 {
        send(
            "query Real { __typename }".into(),
            format!("{i}{}", "x".repeat(500_000)),
        )
        .await;
    }
    let long = "L".repeat(400_000);
    send(format!("query {long} {{ __typename }}"), long.clone()).await;

    let text = app.get("/metrics").await.text().await.unwrap();
    let names: std::collections::HashSet<&str> = text
        .lines()
        .filter(|line| line.starts_with("repository_graphql_operations_total{"))
        .filter_map(|line| line.split("operation=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        names.len() <= 205,
        "{} distinct operation labels",
        names.len()
    );
    assert!(names.contains("other"), "{names:?}");
    assert!(
        names.contains("Op0") || names.len() > 150,
        "the first names are kept"
    );
    assert!(
        !text.contains("xxxx") && !text.contains("LLLL"),
        "long names never become labels"
    );
    assert!(text.len() < 1024 * 1024, "/metrics is {} bytes", text.len());
    assert_eq!(
        sample(
            &text,
            "repository_graphql_operations_total{operation=\"unknown\",outcome=\"INVALID_INPUT\"}"
        ),
        5.0,
        "names the document does not define count as `unknown`"
    );
}

#[tokio::test]
async fn the_change_feed_is_measured() {
    let app = common::embedded(config_with(|c| c.webhooks.allow_private_networks = true)).await;
    // A receiver that takes every delivery.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
        axum::serve(listener, app).await.unwrap();
    });
    app.ok(
        "mutation($url: String!) { createWebhook(input: {url: $url, secret: \"s\"}) { id } }",
        json!({ "url": url }),
    )
    .await;
    let stream = app.get("/events").await;
    assert_eq!(stream.status(), 200);
    for id in ["a", "b", "c"] {
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
            json!({ "id": id }),
        )
        .await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        let delivered = sample(
            &text,
            "repository_webhook_deliveries_total{outcome=\"delivered\"}",
        );
        if delivered == 3.0 {
            assert_eq!(sample(&text, "repository_events_appended "), 3.0, "{text}");
            assert_eq!(
                sample(&text, "repository_event_subscribers{transport=\"sse\"}"),
                1.0,
                "{text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        if sample(&text, "repository_event_subscribers{transport=\"sse\"}") == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber is counted out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
