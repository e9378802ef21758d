//! Webhooks: signed deliveries, in order, retried after failures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::Starter;
use crate::common::{Config, TestApp, config_with, eventually, test_config};

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

pub fn allow_private() -> Config {
    allow_private_with(|_| {})
}

/// [`allow_private`] as `change` leaves it.
pub fn allow_private_with(change: impl FnOnce(&mut Config)) -> Config {
    config_with(|c| {
        c.webhooks.allow_private_networks = true;
        change(c);
    })
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
    let app = start(test_config()).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8/hook",
        // IPv6 spellings of internal addresses: mapped, compatible, NAT64, 6to4, Teredo, site-local, ULA.
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://[::127.0.0.1]:9/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "http://[2002:7f00:1::1]:9/hook",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:9/hook",
        "http://[fec0::1]:9/hook",
        "http://[fd00::1]:9/hook",
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

/// The value of the Prometheus sample `name` (0 when absent).
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Mean time of `count` service creations, for the report (never asserted: the machine is shared).
async fn time_creates(app: &TestApp, prefix: &str, count: usize) -> Duration {
    let started = Instant::now();
    for i in 0..count {
        create_service(app, &format!("{prefix}-{i}")).await;
    }
    started.elapsed() / count as u32
}

pub const EXAMINED: &str = "repository_webhook_events_examined_total";
const CURSOR_SAVES: &str = "repository_webhook_cursor_saves_total";

/// A hundred webhooks that all filter an event out write nothing for it: no delivery, no cursor; a wanted event
/// is delivered by each, and saves each cursor.
pub async fn filtered_out_events_cost_webhooks_no_writes(start: Starter) {
    let app = start(allow_private_with(|c| {
        c.webhooks.cursor_save_interval = Duration::from_secs(3600)
    }))
    .await;
    let receiver = Receiver::start(0).await;
    let without = time_creates(&app, "before", 20).await;
    const HOOKS: usize = 100;
    for _ in 0..HOOKS {
        create_webhook(&app, &receiver.url, "filtered", json!(["MODEL"])).await;
    }
    // Every worker running and caught up (each has looked at one event) before timing.
    create_service(&app, "warm").await;
    assert!(
        eventually(Duration::from_secs(60), async || metric(&app, EXAMINED)
            .await
            >= HOOKS as f64)
        .await
    );
    const EVENTS: usize = 20;
    let with = time_creates(&app, "after", EVENTS).await;
    eprintln!(
        "mean service creation: {without:?} without webhooks, {with:?} with {HOOKS} that filter it out"
    );
    // The positive signal that every worker has been through the events: they counted them.
    let examined = (HOOKS * (EVENTS + 1)) as f64;
    assert!(
        eventually(Duration::from_secs(60), async || metric(&app, EXAMINED)
            .await
            >= examined)
        .await,
        "the workers looked at {} of {examined} events",
        metric(&app, EXAMINED).await
    );
    assert_eq!(metric(&app, CURSOR_SAVES).await, 0.0, "no cursor written");
    let listed = app
        .ok("{ webhooks { cursor deliveries { id } } }", json!({}))
        .await;
    for webhook in listed["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["deliveries"], json!([]), "no delivery written");
    }
    assert!(receiver.received().is_empty());

    // A wanted event: each webhook delivers it and saves its cursor at once, past the filtered-out ones too.
    app.ok(
        "mutation { createModel(input: {name: \"m\", version: \"1\", library: \"l\"}) { name } }",
        json!({}),
    )
    .await;
    let received = receiver.wait_for(HOOKS, Duration::from_secs(60)).await;
    let sequence = verified(&received[0], "filtered")["sequence"].clone();
    assert!(
        eventually(Duration::from_secs(30), async || {
            let listed = app.ok("{ webhooks { cursor } }", json!({})).await;
            listed["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["cursor"] == sequence)
        })
        .await,
        "every cursor saved at {sequence}"
    );
    assert_eq!(metric(&app, CURSOR_SAVES).await, HOOKS as f64);
    assert_eq!(
        receiver.received().len(),
        HOOKS,
        "each webhook sent it once"
    );
}

/// `--max-webhooks` caps how many webhooks there are, also against concurrent creations.
pub async fn webhooks_are_capped(start: Starter) {
    let app = start(allow_private_with(|c| c.webhooks.max_webhooks = 3)).await;
    let create = async |app: &TestApp| {
        app.gql(
            "mutation { createWebhook(input: {url: \"http://127.0.0.1:9/hook\", secret: \"s\"}) { id } }",
            json!({}),
        )
        .await
    };
    let first = create(&app).await;
    let first = first["data"]["createWebhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Six at once for the two places left: two get one.
    let answers = futures_util::future::join_all((0..6).map(|_| create(&app))).await;
    let created = answers
        .iter()
        .filter(|a| a["data"]["createWebhook"]["id"].is_string())
        .count();
    assert_eq!(created, 2, "{answers:#?}");
    for answer in answers.iter().filter(|a| a["errors"].is_array()) {
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED",
            "{answer:#}"
        );
    }
    // Full: one more is refused, precisely.
    let refused = create(&app).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED",
        "{refused:#}"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--max-webhooks"),
        "{refused:#}"
    );
    assert_eq!(
        app.ok("{ webhooks { id } }", json!({})).await["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Deleting one makes room.
    app.ok(
        "mutation($id: ID!) { deleteWebhook(id: $id) }",
        json!({ "id": first }),
    )
    .await;
    assert!(create(&app).await["data"]["createWebhook"]["id"].is_string());
}

/// Settled deliveries beyond the per-webhook count, or older than the age, are removed in the background; a
/// pending one stays whatever its age.
pub async fn webhook_deliveries_are_pruned(start: Starter) {
    let deliveries = async |app: &TestApp, id: &str| -> Vec<Value> {
        let listed = app
            .ok(
                "{ webhooks { id deliveries { sequence status } } }",
                json!({}),
            )
            .await;
        let webhook = listed["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .cloned()
            .unwrap();
        webhook["deliveries"].as_array().unwrap().clone()
    };

    // By count: the two newest stay.
    let app = start(allow_private_with(|c| {
        c.webhooks.deliveries_kept = 2;
        c.events.sweep_interval = Duration::from_secs(1);
    }))
    .await;
    let receiver = Receiver::start(0).await;
    let id = create_webhook(&app, &receiver.url, "pruned", json!(null)).await;
    for i in 0..4 {
        create_service(&app, &format!("s{i}")).await;
    }
    let received = receiver.wait_for(4, Duration::from_secs(30)).await;
    let sequences: Vec<Value> = received
        .iter()
        .map(|r| verified(r, "pruned")["sequence"].clone())
        .collect();
    assert!(
        eventually(Duration::from_secs(30), async || deliveries(&app, &id)
            .await
            .len()
            == 2)
        .await,
        "{:#?}",
        deliveries(&app, &id).await
    );
    let kept = deliveries(&app, &id).await;
    assert_eq!(kept[0]["sequence"], sequences[3]);
    assert_eq!(kept[1]["sequence"], sequences[2]);
    assert!(kept.iter().all(|d| d["status"] == "DELIVERED"));
    app.stop().await;

    // By age: a settled delivery goes after a second; a pending one stays.
    let app = start(allow_private_with(|c| {
        c.webhooks.delivery_max_age = Duration::from_secs(1);
        c.events.sweep_interval = Duration::from_secs(1);
    }))
    .await;
    let taking = Receiver::start(0).await;
    let failing = Receiver::start(usize::MAX).await;
    let pending = create_webhook(&app, &failing.url, "aged", json!(["SERVICE"])).await;
    let delivered = create_webhook(&app, &taking.url, "aged", json!(["MODEL"])).await;
    // The pending delivery first, so it is the older of the two.
    create_service(&app, "aged").await;
    assert!(
        eventually(Duration::from_secs(30), async || !deliveries(
            &app, &pending
        )
        .await
        .is_empty())
        .await
    );
    app.ok(
        "mutation { createModel(input: {name: \"m\", version: \"1\", library: \"l\"}) { name } }",
        json!({}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(30), async || !deliveries(
            &app, &delivered
        )
        .await
        .is_empty())
        .await
    );
    assert!(
        eventually(Duration::from_secs(30), async || deliveries(
            &app, &delivered
        )
        .await
        .is_empty())
        .await,
        "the delivered one is pruned after a second"
    );
    // The sweep that removed it found the older pending one too, and kept it.
    let left = deliveries(&app, &pending).await;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["status"], "PENDING");
}
