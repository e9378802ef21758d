//! Bearer tokens over HTTP: writes need a write token, reads a read token unless reads are public.

mod common;

use common::{TestApp, bytes, config_with, test_config, tokens};
use serde_json::{Value, json};

const CREATE: &str = "mutation { createService(input: {id: \"svc\"}) { id } }";
const LIST: &str = "{ services { totalCount } }";

async fn with_tokens(public_reads: bool) -> TestApp {
    common::embedded(config_with(|c| {
        c.auth = tokens(&["r-one"], &["w-one", "w-two"], public_reads);
    }))
    .await
}

/// Status and body of a GraphQL request with an optional token.
async fn graphql(app: &TestApp, query: &str, token: Option<&str>) -> (u16, Value) {
    app.gql_as(token, query).await
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn writes_need_a_write_token_and_reads_a_token() {
    let app = with_tokens(false).await;

    let (status, body) = graphql(&app, CREATE, None).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    let (status, body) = graphql(&app, CREATE, Some("r-one")).await;
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "{body}");
    let (status, body) = graphql(&app, CREATE, Some("not-a-token")).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    let (status, body) = graphql(&app, CREATE, Some("w-two")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["createService"]["id"], "svc");

    let (status, body) = graphql(&app, LIST, None).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"));
    for token in ["r-one", "w-one"] {
        let (status, body) = graphql(&app, LIST, Some(token)).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"]["services"]["totalCount"], 1);
    }

    // REST downloads are reads; the 401 says how to authenticate.
    let anonymous = app.get("/service/svc").await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHENTICATED");
    let reader = app
        .get_with("/service/svc", &[("authorization", "Bearer r-one")])
        .await;
    assert_eq!(reader.status(), 404, "no file yet, but the token is good");

    // GET /graphql is a read.
    let get = app
        .get_with(
            "/graphql?query=%7B__typename%7D",
            &[("apollo-require-preflight", "true")],
        )
        .await;
    assert_eq!(get.status(), 401);

    // Health, readiness and the playground stay open: probes and browsers carry no tokens.
    for path in ["/healthz", "/readyz", "/playground"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn uploads_without_a_write_token_are_refused_before_they_are_read() {
    let app = with_tokens(false).await;
    graphql(&app, CREATE, Some("w-one")).await;
    // Refused at once, without the body being staged.
    let response = app
        .upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
            json!({}),
            bytes(1024 * 1024, 1),
            "f.zip",
        )
        .await;
    assert_eq!(response.status(), 401);
    let staged = std::fs::read_dir(app.data_dir.as_ref().unwrap().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(staged, 0, "nothing was staged");
}

#[tokio::test]
async fn public_reads_need_no_token_but_writes_still_do() {
    let app = with_tokens(true).await;
    let (status, _) = graphql(&app, LIST, None).await;
    assert_eq!(status, 200);
    let (status, body) = graphql(&app, CREATE, None).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"));
    assert_eq!(app.get("/service/svc").await.status(), 404);
}

#[tokio::test]
async fn without_tokens_everything_is_open() {
    let app = common::embedded(test_config()).await;
    let (status, _) = graphql(&app, CREATE, None).await;
    assert_eq!(status, 200);
}

/// `connection_init`'s payload of a graphql-transport-ws connection: acknowledged, or closed with a reason.
async fn websocket_init(app: &TestApp, payload: Value) -> Result<(), String> {
    use common::ws::{GraphqlSocket, Outcome};
    let mut socket = GraphqlSocket::connect(app, "graphql-transport-ws")
        .await
        .unwrap();
    socket.init(payload).await.map_err(|refused| match refused {
        Outcome::Closed(code, reason) => format!("{code} {reason}"),
        other => format!("{other:?}"),
    })
}

#[tokio::test]
async fn the_change_feed_needs_a_read_token_and_webhooks_a_write_token() {
    let app = with_tokens(false).await;
    // A refused graphql-transport-ws connection is closed with the protocol's 4403 and the reason.
    let refused = websocket_init(&app, json!({})).await.unwrap_err();
    assert!(refused.starts_with("4403 "), "{refused}");
    assert!(refused.contains("needs a bearer token"), "{refused}");
    let refused = websocket_init(&app, json!({ "Authorization": "Bearer nope" }))
        .await
        .unwrap_err();
    assert!(refused.contains("not valid"), "{refused}");
    websocket_init(&app, json!({ "Authorization": "Bearer r-one" }))
        .await
        .unwrap();

    assert_eq!(app.get("/events").await.status(), 401);
    let sse = app
        .get_with("/events", &[("authorization", "Bearer r-one")])
        .await;
    assert_eq!(sse.status(), 200);

    let (status, body) = graphql(&app, "{ webhooks { id } }", Some("r-one")).await;
    assert_eq!((status, code(&body)), (200, "FORBIDDEN"), "{body}");
    let (status, body) = graphql(&app, "{ webhooks { id } }", Some("w-one")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["webhooks"], json!([]));
    let create = "mutation { createWebhook(input: {url: \"https://example.org/hook\", secret: \"x\"}) { id } }";
    let (status, body) = graphql(&app, create, Some("r-one")).await;
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "{body}");
}
