//! The change feed: every change is one event, in order, resumable over SSE and WebSocket, with retention.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::Starter;
use crate::common::ws::GraphqlSocket;
use crate::common::{TestApp, config_with, test_config};

/// Reads Server-Sent Events off a streaming response.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

/// One Server-Sent Event: its id, name and JSON data.
#[derive(Debug)]
pub struct SseEvent {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event (heartbeats skipped), or `None` when none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // a comment: the heartbeat
                }
                let data = serde_json::from_str(&data).unwrap();
                return Some(SseEvent {
                    id: id.unwrap_or_default(),
                    event,
                    data,
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.body.next()).await {
                Ok(Some(chunk)) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

pub async fn open_sse(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> SseReader {
    SseReader::new(app.get_with(path, headers).await)
}

/// A subscription to the feed after `after` fails at once with `code`.
async fn assert_subscription_refused(app: &TestApp, after: impl std::fmt::Display, code: &str) {
    let query = format!("subscription {{ componentEvents(after: {after}) {{ sequence }} }}");
    let mut subscription =
        GraphqlSocket::subscribe(app.addr, "graphql-transport-ws", json!({}), &query)
            .await
            .unwrap();
    let errors = subscription
        .next_result(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(errors[0]["extensions"]["code"], code, "{errors:#}");
}

async fn last_sequence(app: &TestApp) -> u64 {
    app.ok("{ lastSequence }", json!({})).await["lastSequence"]
        .as_u64()
        .unwrap()
}

const EVENT_FIELDS: &str = "sequence type kind id name version file { sha256 size }";

pub async fn feed_records_every_change_in_order(start: Starter) {
    let app = start(test_config()).await;
    let from = last_sequence(&app).await;
    app.ok(
        "mutation { createModel(input: {name: \"m\", version: \"1\", library: \"keras\", description: \"a\"}) { name } }",
        json!({}),
    )
    .await;
    app.ok(
        "mutation { updateModel(name: \"m\", version: \"1\", input: {description: \"b\"}) { name } }",
        json!({}),
    )
    .await;
    let first = crate::common::bytes(1000, 1);
    let second = crate::common::bytes(2000, 2);
    for bytes in [first.clone(), second.clone()] {
        let response = app
            .upload(
                "mutation($file: Upload!) { uploadModelFile(name: \"m\", version: \"1\", file: $file) { name } }",
                json!({}),
                bytes,
                "m.zip",
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body:#}");
    }
    app.ok(
        "mutation { deleteModel(name: \"m\", version: \"1\") }",
        json!({}),
    )
    .await;
    let page = app
        .ok(
            &format!(
                "query($after: String) {{ events(after: $after) {{ edges {{ cursor node {{ {EVENT_FIELDS} }} }}
                   pageInfo {{ hasNextPage endCursor }} }} }}"
            ),
            json!({ "after": from.to_string() }),
        )
        .await;
    let edges = page["events"]["edges"].as_array().unwrap();
    let types: Vec<&str> = edges
        .iter()
        .map(|e| e["node"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "CREATED",
            "UPDATED",
            "FILE_UPLOADED",
            "FILE_REPLACED",
            "DELETED"
        ]
    );
    let sequences: Vec<u64> = edges
        .iter()
        .map(|e| e["node"]["sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    for edge in edges {
        assert_eq!(edge["cursor"], edge["node"]["sequence"].to_string());
    }
    assert_eq!(
        edges[2]["node"]["file"]["sha256"],
        crate::common::sha256_hex(&first)
    );
    assert_eq!(
        edges[3]["node"]["file"]["sha256"],
        crate::common::sha256_hex(&second)
    );
    // Each event whole; the positions depend on the store's history, the digests are checked above.
    super::assert_json_snapshot(
        "feed_events",
        &page["events"]["edges"],
        &[
            ("[].cursor", "[cursor]"),
            ("[].node.sequence", "[sequence]"),
            ("[].node.file.sha256", "[sha256]"),
        ],
    );
    assert_eq!(page["events"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(last_sequence(&app).await, *sequences.last().unwrap());

    // Pages, filters and a failed change (no event).
    assert_eq!(
        app.error_code(
            "mutation { deleteModel(name: \"m\", version: \"1\") }",
            json!({})
        )
        .await,
        "NOT_FOUND"
    );
    let deletions = app
        .ok(
            "query($after: String) { events(after: $after, first: 1, filter: {types: [DELETED, CREATED], kinds: [MODEL]}) {
                edges { node { type } } pageInfo { hasNextPage endCursor } } }",
            json!({ "after": from.to_string() }),
        )
        .await;
    assert_eq!(deletions["events"]["edges"][0]["node"]["type"], "CREATED");
    assert_eq!(deletions["events"]["pageInfo"]["hasNextPage"], true);
    let rest = app
        .ok(
            "query($after: String) { events(after: $after, filter: {types: [DELETED, CREATED]}) {
                edges { node { type } } pageInfo { hasNextPage } } }",
            json!({ "after": deletions["events"]["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        rest["events"]["edges"],
        json!([{ "node": { "type": "DELETED" } }])
    );
    let services = app
        .ok(
            "query($after: String) { events(after: $after, filter: {kinds: [SERVICE]}) { edges { cursor } } }",
            json!({ "after": from.to_string() }),
        )
        .await;
    assert_eq!(services["events"]["edges"], json!([]));
}

/// Writers on `writers` tasks make `per_writer` changes each while an SSE subscriber and a WebSocket subscriber
/// follow the feed: each sees every event exactly once, in sequence order.
pub async fn concurrent_writers_feed_subscribers_in_order(start: Starter) {
    let app = start(test_config()).await;
    let backend = app.get("/readyz").await.json::<Value>().await.unwrap()["backend"].clone();
    // nx-27017 (SQLite behind the wire protocol) serialises writes: 10 x 1,000 changes there take about five
    // minutes of CI, so the stand-in gets 10 x 100; embedded and real MongoDB run 10 x 1,000.
    let wire = backend == "mongodb" && crate::common::mongo::target().is_ok_and(|t| t.is_wire());
    let (writers, per_writer) = if wire { (10, 100) } else { (10, 1000) };
    let total = writers * per_writer;
    let from = last_sequence(&app).await;
    let mut sse = open_sse(&app, &format!("/events?after={from}&kinds=service"), &[]).await;
    let mut ws = GraphqlSocket::subscribe(
        app.addr,
        "graphql-transport-ws",
        json!({}),
        &format!("subscription {{ componentEvents(after: {from}) {{ sequence type id }} }}"),
    )
    .await
    .unwrap();
    let started = Instant::now();
    // The WebSocket is read while the writers run: a client that reads nothing answers no pings, and the server
    // closes a WebSocket silent for a minute (which the writers take on a busy machine).
    let ws_reader = tokio::spawn(async move {
        let mut sequences = Vec::with_capacity(total);
        for n in 0..total {
            let Some(data) = ws.next_result(Duration::from_secs(30)).await else {
                let how = ws.closed().await;
                panic!("the subscription stalled after {n} of {total} events: {how:?}");
            };
            let data = data.unwrap();
            sequences.push(data["componentEvents"]["sequence"].as_u64().unwrap());
        }
        sequences
    });
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = app.client.clone();
        let url = app.url("/graphql");
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let body: Value = client
                    .post(&url)
                    .json(&json!({
                        "query": "mutation($id: ID!) { createService(input: {id: $id, description: \"s\"}) { id } }",
                        "variables": { "id": format!("w{w}.s{i}") },
                    }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(body.get("errors").is_none(), "{body:#}");
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut last = from;
    while seen.len() < total {
        let event = sse
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("SSE stalled after {} of {total} events", seen.len()));
        assert!(event.id > last, "in order: {} after {last}", event.id);
        last = event.id;
        assert_eq!(event.data["sequence"], event.id);
        assert_eq!(event.event, "created");
        assert!(
            seen.insert(event.data["id"].as_str().unwrap().to_string()),
            "once"
        );
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut ws_last = from;
    for sequence in ws_reader.await.unwrap() {
        assert!(sequence > ws_last);
        ws_last = sequence;
    }
    assert_eq!(ws_last, last, "both transports end at the same event");
    assert!(
        sse.next(Duration::from_millis(300)).await.is_none(),
        "no extra event"
    );
    println!(
        "{total} changes by {writers} writers followed in {:?} ({backend})",
        started.elapsed()
    );
}

pub async fn sse_resumes_with_last_event_id(start: Starter) {
    let app = start(test_config()).await;
    let from = last_sequence(&app).await;
    for i in 0..3 {
        app.create_service(&format!("a{i}")).await;
    }
    let mut sse = open_sse(&app, &format!("/events?after={from}"), &[]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(sse.next(Duration::from_secs(10)).await.unwrap().id);
    }
    drop(sse); // the connection breaks
    for i in 0..3 {
        app.create_service(&format!("b{i}")).await;
    }
    let resume = ids[2].to_string();
    // Last-Event-ID wins over the `after` of the original URL, as after a browser's automatic reconnect.
    let mut sse = open_sse(
        &app,
        &format!("/events?after={from}"),
        &[("last-event-id", &resume)],
    )
    .await;
    let mut names = Vec::new();
    for _ in 0..3 {
        let event = sse.next(Duration::from_secs(10)).await.unwrap();
        assert!(event.id > ids[2]);
        names.push(event.data["id"].as_str().unwrap().to_string());
    }
    assert_eq!(names, ["b0", "b1", "b2"]);
    assert!(sse.next(Duration::from_millis(300)).await.is_none());

    // Live events after the backlog, and no `after` means from now.
    let mut live = open_sse(&app, "/events", &[]).await;
    app.create_service("c0").await;
    let event = live.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.data["id"], "c0");
    assert_eq!(event.data["kind"], "service");

    let bad = app.get("/events?kinds=gadget").await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_INPUT");
}

pub async fn websocket_subscription_resumes_and_filters(start: Starter) {
    let app = start(test_config()).await;
    let query = |after: u64| {
        format!(
            "subscription {{ componentEvents(after: {after}, kinds: [SERVICE, TRANSFORMATION],
                runnableOn: {{gpu: false, ram: 4}}) {{ {EVENT_FIELDS} }} }}"
        )
    };
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let from = last_sequence(&app).await;
        let mut subscription =
            GraphqlSocket::subscribe(app.addr, protocol, json!({}), &query(from))
                .await
                .unwrap();
        let tag = protocol.replace('-', "_");
        let small = format!("{tag}.small");
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id, description: \"s\", needs: {ram: 2}}) { id } }",
            json!({ "id": small }),
        )
        .await;
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id, description: \"s\", needs: {ram: 64}}) { id } }",
            json!({ "id": format!("{tag}.big") }),
        )
        .await;
        app.ok(
            "mutation($id: ID!) { updateService(id: $id, input: {needs: {ram: 32}}) { id } }",
            json!({ "id": small }),
        )
        .await;
        let first = subscription
            .next_result(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first["componentEvents"]["id"], small.as_str());
        assert_eq!(first["componentEvents"]["type"], "CREATED");
        // The update made it too big for the device: delivered, so the consumer can drop it.
        let second = subscription
            .next_result(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second["componentEvents"]["type"], "UPDATED");
        assert_eq!(second["componentEvents"]["id"], small.as_str());
        let resume_after = second["componentEvents"]["sequence"].as_u64().unwrap();
        drop(subscription);

        app.ok(
            "mutation($id: ID!) { deleteService(id: $id) }",
            json!({ "id": format!("{tag}.big") }),
        )
        .await;
        app.ok(
            "mutation($id: ID!) { createTransformation(input: {id: $id, description: \"t\"}) { id } }",
            json!({ "id": format!("{tag}.t") }),
        )
        .await;
        let mut resumed =
            GraphqlSocket::subscribe(app.addr, protocol, json!({}), &query(resume_after))
                .await
                .unwrap();
        let next = resumed
            .next_result(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            next["componentEvents"]["kind"], "TRANSFORMATION",
            "the big one's deletion is not for this device"
        );
        assert!(next["componentEvents"]["sequence"].as_u64().unwrap() > resume_after);
        assert!(
            resumed
                .next_result(Duration::from_millis(300))
                .await
                .is_none()
        );
    }
}

/// Reads `socket` until each operation of `wanted` has had its number of results; the `componentEvents` of each.
async fn results_by_operation(
    socket: &mut GraphqlSocket,
    wanted: &[(&str, usize)],
) -> std::collections::HashMap<String, Vec<Value>> {
    let mut results: std::collections::HashMap<String, Vec<Value>> = wanted
        .iter()
        .map(|(id, _)| (id.to_string(), Vec::new()))
        .collect();
    while wanted.iter().any(|(id, count)| results[*id].len() < *count) {
        let message = socket.receive().await.expect("the connection stays open");
        match message["type"].as_str() {
            Some("next" | "data") => {}
            Some("ka" | "pong") => continue,
            _ => panic!("only results are expected: {message}"),
        }
        let id = message["id"]
            .as_str()
            .expect("a result names its operation");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        results
            .get_mut(id)
            .unwrap_or_else(|| panic!("a result for an operation not running: {message}"))
            .push(message["payload"]["data"]["componentEvents"].clone());
    }
    results
}

/// Subscribers that follow the feed live with the same operation (on several connections, twice on one, over
/// both protocols) share its execution: each still gets every event once, in order, under its own operation id,
/// counts as a subscriber, and can leave without disturbing the others; subscribers with other filters or a
/// replay get only theirs.
pub async fn identical_websocket_subscribers_each_get_every_event_once(start: Starter) {
    let app = start(test_config()).await;
    const ALL: &str = "subscription { componentEvents { sequence type kind id } }";
    const SERVICES: &str =
        "subscription { componentEvents(kinds: [SERVICE]) { sequence type kind id } }";
    const RUNNABLE: &str = "subscription($device: DeviceInput) {
        componentEvents(kinds: [TRANSFORMATION], runnableOn: $device) { sequence type kind id } }";
    let from = last_sequence(&app).await;
    let open = async |protocol: &str| {
        let mut socket = GraphqlSocket::connect(app.addr, protocol).await.unwrap();
        socket.init(json!({})).await.unwrap();
        socket
    };
    let mut a = open("graphql-transport-ws").await;
    a.start("a1", ALL, json!({})).await;
    a.start("a2", ALL, json!({})).await;
    a.start("a3", SERVICES, json!({})).await;
    let mut b = open("graphql-ws").await;
    b.start("b", ALL, json!({})).await;
    b.start("s", SERVICES, json!({})).await;
    let mut c = open("graphql-transport-ws").await;
    c.start("c", ALL, json!({ "after": null })).await;
    c.start(
        "t",
        RUNNABLE,
        json!({ "device": { "gpu": false, "ram": 4 } }),
    )
    .await;
    let mut replay = open("graphql-transport-ws").await;
    replay
        .start(
            "r",
            &format!(
                "subscription {{ componentEvents(after: {from}) {{ sequence type kind id }} }}"
            ),
            json!({}),
        )
        .await;
    let subscribers = async || app.event_subscribers("graphql_ws").await;
    assert!(
        crate::common::eventually(Duration::from_secs(10), async || subscribers().await == 8.0)
            .await,
        "each subscription counts as a subscriber once it follows the feed: {}",
        subscribers().await
    );

    let mut all = Vec::new();
    for i in 0..2 {
        for (kind, id, ram) in [
            ("Service", format!("share.svc{i}"), 2),
            ("Transformation", format!("share.tr{i}"), 1),
            ("Transformation", format!("share.trbig{i}"), 64),
            ("Service", format!("share.svcbig{i}"), 64),
        ] {
            app.ok(
                &format!("mutation($id: ID!, $ram: Int) {{ create{kind}(input: {{id: $id, needs: {{ram: $ram}}}}) {{ id }} }}"),
                json!({ "id": id, "ram": ram }),
            )
            .await;
            all.push(id);
        }
    }
    let services: Vec<&String> = all.iter().filter(|id| id.contains(".svc")).collect();
    let runnable: Vec<&String> = all
        .iter()
        .filter(|id| id.starts_with("share.tr") && !id.contains("big"))
        .collect();
    let n = all.len();
    let check = |results: &std::collections::HashMap<String, Vec<Value>>,
                 id: &str,
                 expected: &[&String]| {
        let got: Vec<&str> = results[id]
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            got, expected,
            "operation {id}: every event it follows, once, in order"
        );
        let sequences: Vec<u64> = results[id]
            .iter()
            .map(|e| e["sequence"].as_u64().unwrap())
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{id}: {sequences:?}"
        );
        assert!(sequences.iter().all(|s| *s > from));
    };
    let everything: Vec<&String> = all.iter().collect();
    let on_a = results_by_operation(&mut a, &[("a1", n), ("a2", n), ("a3", services.len())]).await;
    check(&on_a, "a1", &everything);
    check(&on_a, "a2", &everything);
    check(&on_a, "a3", &services);
    let on_b = results_by_operation(&mut b, &[("b", n), ("s", services.len())]).await;
    check(&on_b, "b", &everything);
    check(&on_b, "s", &services);
    let on_c = results_by_operation(&mut c, &[("c", n), ("t", runnable.len())]).await;
    check(&on_c, "c", &everything);
    check(&on_c, "t", &runnable);
    let on_replay = results_by_operation(&mut replay, &[("r", n)]).await;
    check(&on_replay, "r", &everything);

    // One leaves: it gets its `complete` and nothing more; the others with the same operation go on.
    a.stop("a1").await;
    let complete = a.receive().await.unwrap();
    assert_eq!(complete, json!({ "type": "complete", "id": "a1" }));
    assert!(
        crate::common::eventually(Duration::from_secs(10), async || subscribers().await == 7.0)
            .await,
        "the subscriber that left is not counted"
    );
    app.ok(
        "mutation { createService(input: {id: \"share.late\"}) { id } }",
        json!({}),
    )
    .await;
    let late = results_by_operation(&mut a, &[("a1", 0), ("a2", 1), ("a3", 1)]).await;
    assert_eq!(late["a2"][0]["id"], "share.late");
    assert_eq!(late["a3"][0]["id"], "share.late");
    let late = results_by_operation(&mut b, &[("b", 1), ("s", 1)]).await;
    assert_eq!(late["b"][0]["id"], "share.late");
}

pub async fn expired_feed_positions_answer_events_expired(start: Starter) {
    let app = start(config_with(|c| {
        c.events.retention.max_count = 3;
        c.events.sweep_interval = Duration::from_secs(1);
    }))
    .await;
    let from = last_sequence(&app).await;
    for i in 0..6 {
        app.create_service(&format!("r{i}")).await;
    }
    let query = "query($after: String) { events(after: $after) { edges { node { id } } } }";
    crate::common::wait_for(Duration::from_secs(20), async || {
        let body = app.gql(query, json!({ "after": from.to_string() })).await;
        match body["errors"][0]["extensions"]["code"] == "EVENTS_EXPIRED" {
            true => Ok(()),
            false => Err(format!("retention never removed events: {body:#}")),
        }
    })
    .await;
    let kept = app
        .ok("{ events { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(
        kept["events"]["edges"],
        json!([{ "node": { "id": "r3" } }, { "node": { "id": "r4" } }, { "node": { "id": "r5" } }])
    );
    let gone = app.get(&format!("/events?after={from}")).await;
    assert_eq!(gone.status(), 410);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["code"], "EVENTS_EXPIRED");
    assert_subscription_refused(&app, from, "EVENTS_EXPIRED").await;
    // New events keep counting up after what was removed.
    app.create_service("r6").await;
    assert_eq!(last_sequence(&app).await, from + 7);
}

/// Alias moves and locks are events like any change: one per move or lock (none for a move to where the alias
/// already points, or a second lock), in order, on the query, the subscription (a model alias is a model event),
/// SSE and webhooks.
pub async fn alias_moves_and_locks_are_on_the_feed(start: Starter) {
    let app = start(super::webhooks::allow_private()).await;
    let receiver = super::webhooks::Receiver::start(0).await;
    let hook = app
        .ok(
            "mutation($url: String!) { createWebhook(input: {url: $url, secret: \"s3\", types: [ALIAS_SET, ALIAS_DELETED, LOCKED]}) { id } }",
            json!({ "url": receiver.url }),
        )
        .await;
    assert!(hook["createWebhook"]["id"].is_string());
    let from = last_sequence(&app).await;
    let mut models = GraphqlSocket::subscribe(
        app.addr,
        "graphql-transport-ws",
        json!({}),
        &format!(
            "subscription {{ componentEvents(after: {from}, kinds: [MODEL]) {{ type version alias {{ alias from to by }} }} }}"
        ),
    )
    .await
    .unwrap();
    let mut device = GraphqlSocket::subscribe(
        app.addr,
        "graphql-transport-ws",
        json!({}),
        &format!(
            "subscription {{ componentEvents(after: {from}, runnableOn: {{gpu: false, ram: 4}}) {{ type kind id }} }}"
        ),
    )
    .await
    .unwrap();
    let mut sse = open_sse(
        &app,
        &format!("/events?after={from}&types=alias_set,alias_deleted,locked"),
        &[],
    )
    .await;

    for version in ["1", "2"] {
        app.ok(
            "mutation($v: String!) { createModel(input: {name: \"m\", version: $v, library: \"keras\", description: \"a\"}) { name } }",
            json!({ "v": version }),
        )
        .await;
    }
    let bytes = crate::common::bytes(1500, 3);
    let response = app
        .upload(
            "mutation($file: Upload!) { uploadModelFile(name: \"m\", version: \"1\", file: $file) { name } }",
            json!({}),
            bytes.clone(),
            "m.zip",
        )
        .await;
    assert_eq!(response.status(), 200);
    let set = |version: &'static str| {
        let app = &app;
        async move {
            app.ok(
                "mutation($v: String!) { setModelAlias(name: \"m\", alias: \"production\", version: $v) { version } }",
                json!({ "v": version }),
            )
            .await
        }
    };
    set("1").await;
    set("1").await; // where it already points: no move, no event
    set("2").await;
    app.ok(
        "mutation { deleteModelAlias(name: \"m\", alias: \"production\") }",
        json!({}),
    )
    .await;
    for _ in 0..2 {
        // The second lock changes nothing: no event.
        app.ok(
            "mutation { lockModel(name: \"m\", version: \"1\") { locked } }",
            json!({}),
        )
        .await;
    }
    app.ok(
        "mutation { createService(input: {id: \"svc\", description: \"s\", needs: {ram: 2}}) { id } }",
        json!({}),
    )
    .await;
    app.ok("mutation { lockService(id: \"svc\") { id } }", json!({}))
        .await;

    let page = app
        .ok(
            "query($after: String) { events(after: $after) { edges { node {
                sequence type kind name version id file { sha256 size } alias { alias from to by } } } } }",
            json!({ "after": from.to_string() }),
        )
        .await;
    let nodes: Vec<&Value> = page["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    let summary: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n["type"].as_str().unwrap().to_string(),
                n["version"]
                    .as_str()
                    .or(n["id"].as_str())
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let expected = [
        ("CREATED", "1"),
        ("CREATED", "2"),
        ("FILE_UPLOADED", "1"),
        ("ALIAS_SET", "1"),
        ("ALIAS_SET", "2"),
        ("ALIAS_DELETED", "2"),
        ("LOCKED", "1"),
        ("CREATED", "svc"),
        ("LOCKED", "svc"),
    ];
    assert_eq!(
        summary,
        expected.map(|(t, k)| (t.to_string(), k.to_string()))
    );
    let sha = crate::common::sha256_hex(&bytes);
    assert_eq!(
        nodes[3]["alias"],
        json!({ "alias": "production", "from": null, "to": "1", "by": "anonymous" })
    );
    assert_eq!(nodes[3]["file"], json!({ "sha256": sha, "size": 1500 }));
    assert_eq!(
        nodes[4]["alias"],
        json!({ "alias": "production", "from": "1", "to": "2", "by": "anonymous" })
    );
    assert_eq!(nodes[4]["file"], Value::Null, "version 2 has no file");
    assert_eq!(
        nodes[5]["alias"],
        json!({ "alias": "production", "from": "2", "to": null, "by": "anonymous" })
    );
    assert_eq!(nodes[6]["alias"], Value::Null);
    assert_eq!(nodes[6]["file"], json!({ "sha256": sha, "size": 1500 }));
    assert_eq!(nodes[8]["kind"], "SERVICE");
    let history = app
        .ok(
            "{ modelAliasHistory(name: \"m\", alias: \"production\") { from to } }",
            json!({}),
        )
        .await;
    assert_eq!(
        history["modelAliasHistory"].as_array().unwrap().len(),
        3,
        "one history entry per event"
    );

    // The model subscription sees every model event, alias moves included, in order.
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let next = models
            .next_result(Duration::from_secs(10))
            .await
            .expect("a model event")
            .unwrap();
        seen.push(next["componentEvents"].clone());
    }
    let types: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "CREATED",
            "CREATED",
            "FILE_UPLOADED",
            "ALIAS_SET",
            "ALIAS_SET",
            "ALIAS_DELETED",
            "LOCKED"
        ]
    );
    assert_eq!(seen[4]["alias"]["from"], "1");
    assert!(
        models
            .next_result(Duration::from_millis(300))
            .await
            .is_none()
    );

    // A device follows what it can run: models (and so their aliases) are left out, the service's lock is not.
    for expected in ["CREATED", "LOCKED"] {
        let next = device
            .next_result(Duration::from_secs(10))
            .await
            .expect("a service event")
            .unwrap();
        assert_eq!(next["componentEvents"]["type"], expected);
        assert_eq!(next["componentEvents"]["id"], "svc");
    }
    assert!(
        device
            .next_result(Duration::from_millis(300))
            .await
            .is_none()
    );

    // SSE, filtered by the new types.
    let mut names = Vec::new();
    for _ in 0..5 {
        let event = sse
            .next(Duration::from_secs(10))
            .await
            .expect("an SSE event");
        names.push(event.event.clone());
        if event.event == "alias_deleted" {
            assert_eq!(event.data["alias"]["from"], "2");
            assert_eq!(event.data["alias"]["to"], Value::Null);
            assert_eq!(event.data["name"], "m");
            assert_eq!(event.data["version"], "2");
        }
    }
    assert_eq!(
        names,
        [
            "alias_set",
            "alias_set",
            "alias_deleted",
            "locked",
            "locked"
        ]
    );

    // Webhooks, signed as any delivery.
    let delivered = receiver.wait_for(5, Duration::from_secs(30)).await;
    let bodies: Vec<Value> = delivered
        .iter()
        .map(|r| super::webhooks::verified(r, "s3"))
        .collect();
    assert_eq!(
        delivered
            .iter()
            .map(|r| r.headers["x-repository-event"]
                .to_str()
                .unwrap()
                .to_string())
            .collect::<Vec<_>>(),
        [
            "alias_set",
            "alias_set",
            "alias_deleted",
            "locked",
            "locked"
        ]
    );
    assert_eq!(bodies[1]["alias"]["to"], "2");
    assert_eq!(bodies[1]["alias"]["by"], "anonymous");
}

/// Sequences are positions in one feed, named by `feedId` (GraphQL) and `Feed-Id` (SSE). A cursor beyond the newest
/// event is of another feed (the repository was rebuilt at the same address): every transport refuses it with
/// `EVENTS_AHEAD` instead of waiting silently for ever; the head itself is a fine cursor.
pub async fn cursors_beyond_the_head_answer_events_ahead(start: Starter) {
    let app = start(test_config()).await;
    let feed_id = app.ok("{ feedId }", json!({})).await["feedId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!feed_id.is_empty());
    let other = start(test_config()).await;
    let other_id = other.ok("{ feedId }", json!({})).await["feedId"].clone();
    assert_ne!(
        other_id,
        json!(feed_id),
        "each new store starts a feed of its own"
    );
    other.stop().await;

    app.create_service("h0").await;
    let head = last_sequence(&app).await;
    assert_eq!(
        app.ok("{ feedId }", json!({})).await["feedId"],
        json!(feed_id),
        "the id stays with the store"
    );

    // At the head: nothing yet, not an error; over SSE the stream starts and names its feed.
    let query = "query($after: String) { events(after: $after) { edges { node { id } } } }";
    let at_head = app.ok(query, json!({ "after": head.to_string() })).await;
    assert_eq!(at_head["events"]["edges"], json!([]));
    let response = app.get(&format!("/events?after={head}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["feed-id"].to_str().unwrap(), feed_id);
    drop(response);

    // Beyond it: refused everywhere, with the code.
    let ahead = (head + 5).to_string();
    let body = app.gql(query, json!({ "after": ahead })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "EVENTS_AHEAD",
        "{body:#}"
    );
    for response in [
        app.get(&format!("/events?after={ahead}")).await,
        app.get_with("/events", &[("last-event-id", &ahead)]).await,
    ] {
        assert_eq!(response.status(), 409);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "EVENTS_AHEAD", "{body}");
    }
    assert_subscription_refused(&app, &ahead, "EVENTS_AHEAD").await;

    // Once the feed has grown that far, the same cursor is fine again.
    for i in 1..=5 {
        app.create_service(&format!("h{i}")).await;
    }
    let caught_up = app.ok(query, json!({ "after": ahead })).await;
    assert_eq!(caught_up["events"]["edges"], json!([]));
}
