//! Webhooks: signed deliveries, in order, retried after failures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::Starter;
use crate::common::{Options, TestApp};

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A webhook receiver on loopback that answers `failures` requests with 500, then 200.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    failures: Arc<Mutex<usize>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(failures: usize) -> Receiver {
        Self::start_on("127.0.0.1:0", failures).await
    }

    pub async fn start_on(addr: &str, failures: usize) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(failures));
        let (log, left) = (received.clone(), failures.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (log, left) = (log.clone(), left.clone());
                async move {
                    log.lock().unwrap().push(Received {
                        headers,
                        body: body.to_vec(),
                    });
                    let mut left = left.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            received,
            failures,
            _server: server,
        }
    }

    /// From now on, answer 200.
    #[allow(dead_code)] // only the embedded store's restart test uses it
    pub fn recover(&self) {
        *self.failures.lock().unwrap() = 0;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} deliveries arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks a delivery's signature as a receiver would (GitHub's scheme), and returns its JSON body.
pub fn verified(received: &Received, secret: &str) -> Value {
    let header = received.headers["x-repository-signature-256"]
        .to_str()
        .unwrap();
    let hex = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&received.body);
    mac.verify_slice(&hex::decode(hex).unwrap())
        .expect("the signature matches the body");
    assert_eq!(received.headers["content-type"], "application/json");
    serde_json::from_slice(&received.body).unwrap()
}

pub fn allow_private() -> Options {
    Options {
        flags: vec!["--webhooks-allow-private-networks".into()],
        ..Options::default()
    }
}

pub async fn create_webhook(app: &TestApp, url: &str, secret: &str, kinds: Value) -> String {
    let data = app
        .ok(
            "mutation($url: String!, $secret: String!, $kinds: [ComponentKind!]) {
                createWebhook(input: {url: $url, secret: $secret, kinds: $kinds}) { id url kinds } }",
            json!({ "url": url, "secret": secret, "kinds": kinds }),
        )
        .await;
    data["createWebhook"]["id"].as_str().unwrap().to_string()
}

pub async fn create_service(app: &TestApp, id: &str) {
    app.ok(
        "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
        json!({ "id": id }),
    )
    .await;
}

pub async fn webhooks_deliver_signed_events_in_order_with_retries(start: Starter) {
    let app = start(allow_private()).await;
    let receiver = Receiver::start(2).await;
    let secret = "s3cr3t-for-the-test";
    let id = create_webhook(&app, &receiver.url, secret, json!(["SERVICE"])).await;

    create_service(&app, "first").await;
    app.ok(
        "mutation { createModel(input: {name: \"m\", version: \"1\", library: \"l\"}) { name } }",
        json!({}),
    )
    .await;
    create_service(&app, "second").await;

    // Two answers of 500 for the first event (retried after 1 s, then 2 s), then each event once, in order.
    let received = receiver.wait_for(4, Duration::from_secs(30)).await;
    let bodies: Vec<Value> = received.iter().map(|r| verified(r, secret)).collect();
    let ids: Vec<&str> = bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["first", "first", "first", "second"]);
    let deliveries: Vec<&str> = received
        .iter()
        .map(|r| r.headers["x-repository-delivery"].to_str().unwrap())
        .collect();
    assert_eq!(
        deliveries[0], deliveries[1],
        "a retry keeps its delivery id"
    );
    assert_eq!(deliveries[0], deliveries[2]);
    assert_ne!(deliveries[2], deliveries[3]);
    assert_eq!(received[3].headers["x-repository-event"], "created");
    assert_eq!(bodies[3]["kind"], "service");
    assert!(bodies[3]["sequence"].as_u64() > bodies[0]["sequence"].as_u64());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "the model is not for this webhook"
    );

    // Each delivery is recorded just after its receiver answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = app
            .ok(
                "{ webhooks { id url kinds cursor deliveries { id type status attempts lastStatus lastError deliveredAt } } }",
                json!({}),
            )
            .await;
        let deliveries = &listed["webhooks"][0]["deliveries"];
        if deliveries[0]["status"] == "DELIVERED" && deliveries[1]["status"] == "DELIVERED" {
            break listed;
        }
        assert!(Instant::now() < deadline, "{listed:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let webhook = &listed["webhooks"][0];
    assert_eq!(webhook["id"], id.as_str());
    assert_eq!(webhook["kinds"], json!(["SERVICE"]));
    assert!(webhook.get("secret").is_none());
    let deliveries = &webhook["deliveries"];
    assert_eq!(deliveries[0]["status"], "DELIVERED");
    assert_eq!(deliveries[0]["attempts"], 1);
    assert_eq!(deliveries[1]["status"], "DELIVERED");
    assert_eq!(deliveries[1]["attempts"], 3);
    assert_eq!(deliveries[1]["lastStatus"], 200);
    assert_eq!(
        deliveries[1]["id"],
        received[0].headers["x-repository-delivery"]
            .to_str()
            .unwrap()
    );

    // A secret is never returned: the type has no such field.
    assert_eq!(
        app.error_code("{ webhooks { secret } }", json!({})).await,
        "INVALID_INPUT"
    );
    assert_eq!(
        app.ok(
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            json!({ "id": id })
        )
        .await["deleteWebhook"],
        true
    );
    assert_eq!(
        app.error_code(
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            json!({ "id": id })
        )
        .await,
        "NOT_FOUND"
    );
    create_service(&app, "third").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "a deleted webhook gets nothing"
    );
}

pub async fn webhooks_to_private_networks_are_refused(start: Starter) {
    let app = start(Options::default()).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8/hook",
        "ftp://example.org/hook",
    ] {
        let body = app
            .gql(
                "mutation($url: String!) { createWebhook(input: {url: $url, secret: \"x\"}) { id } }",
                json!({ "url": url }),
            )
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "INVALID_INPUT",
            "{url}: {body:#}"
        );
    }
    let body = app
        .gql(
            "mutation { createWebhook(input: {url: \"https://example.org/hook\", secret: \"\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INVALID_INPUT",
        "{body:#}"
    );
    assert_eq!(
        app.ok("{ webhooks { id } }", json!({})).await["webhooks"],
        json!([])
    );
}
