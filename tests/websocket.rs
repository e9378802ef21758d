//! GraphQL over WebSocket as a hostile client would use it: the document checks and limits of HTTP hold, the
//! protocol's rules are enforced with its close codes, operations are capped, idle and half-open connections cannot
//! take the server, and a stopping server says goodbye.

mod common;

use std::time::Duration;

use common::ws::{GraphqlSocket, Outcome, PROTOCOLS};
use common::{Config, TestApp, config_with, tokens};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn app_with(change: impl FnOnce(&mut Config)) -> TestApp {
    common::embedded(config_with(change)).await
}

fn nested(n: usize) -> String {
    format!(
        "{{ services(filter: {{ text: {}\"x\"{} }}) {{ totalCount }} }}",
        "[".repeat(n),
        "]".repeat(n)
    )
}

#[tokio::test]
async fn document_checks_and_limits_hold_over_websocket() {
    let app = app_with(|c| {
        c.limits.max_depth = 4;
        c.limits.max_complexity = 20;
    })
    .await;
    let aliases: String = (0..31).map(|i| format!("a{i}: lastSequence ")).collect();
    let deep_selection =
        "{ services { edges { node { needs { preinstalledLibraries { name } } } } } }";
    let costly: String = (0..25).map(|i| format!("a{i}: lastSequence ")).collect();
    for protocol in PROTOCOLS {
        let mut socket = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        // The document that took the process down over WebSocket (3,000 nested brackets, 6 KB).
        let outcome = socket.run("deep", &nested(3_000), json!({})).await;
        assert_eq!(
            outcome.code().as_deref(),
            Some("INVALID_INPUT"),
            "{protocol}: {outcome:?}"
        );
        let outcome = socket
            .run("aliases", &format!("{{ {aliases} }}"), json!({}))
            .await;
        assert_eq!(
            outcome.code().as_deref(),
            Some("INVALID_INPUT"),
            "{protocol}: {outcome:?}"
        );
        let outcome = socket.run("depth", deep_selection, json!({})).await;
        assert!(
            outcome.code().is_some(),
            "{protocol}: depth over the limit: {outcome:?}"
        );
        let outcome = socket
            .run("complexity", &format!("{{ {costly} }}"), json!({}))
            .await;
        assert!(
            format!("{outcome:?}").contains("complex"),
            "{protocol}: complexity over the limit: {outcome:?}"
        );
        // Within the limits, the same connection still works.
        let outcome = socket.run("ok", "{ lastSequence }", json!({})).await;
        let Outcome::Result(payload) = outcome else {
            panic!("{protocol}: {outcome:?}")
        };
        assert_eq!(payload["data"]["lastSequence"], 0, "{protocol}");
    }
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "the server is alive"
    );
}

#[tokio::test]
async fn messages_larger_than_a_request_body_are_refused() {
    let app = app_with(|_| {}).await;
    let mut socket = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    let padding = " ".repeat(1024 * 1024 + 1);
    socket
        .send(json!({ "type": "subscribe", "id": "big", "payload": { "query": format!("{{ lastSequence }}{padding}") } }))
        .await;
    match socket.closed().await {
        Outcome::Closed(code, _) => assert_eq!(code, 1009, "message too big"),
        other => panic!("{other:?}"),
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn the_protocol_is_enforced_with_its_close_codes() {
    let app = app_with(|c| c.limits.ws_init_timeout = std::time::Duration::from_secs(1)).await;
    let closed_with = async |socket: &mut GraphqlSocket| match socket.closed().await {
        Outcome::Closed(code, reason) => (code, reason),
        other => panic!("{other:?}"),
    };

    // No `connection_init` within the bound: 4408.
    let mut idle = GraphqlSocket::connect(app.addr, "graphql-transport-ws")
        .await
        .unwrap();
    assert_eq!(closed_with(&mut idle).await.0, 4408);

    // An operation before `connection_init`: 4401.
    let mut eager = GraphqlSocket::connect(app.addr, "graphql-transport-ws")
        .await
        .unwrap();
    eager.start("1", "{ lastSequence }", json!({})).await;
    assert_eq!(closed_with(&mut eager).await.0, 4401);

    // Two operations with one id: 4409.
    let mut twice = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    let feed = "subscription { componentEvents { sequence } }";
    twice.start("same", feed, json!({})).await;
    twice.start("same", feed, json!({})).await;
    let (code, reason) = closed_with(&mut twice).await;
    assert_eq!(
        (code, reason.as_str()),
        (4409, "Subscriber for same already exists")
    );

    // A message of no known type, or not JSON: 4400 with a close frame.
    for text in [r#"{"type":"teleport","id":"1"}"#, "not json"] {
        let mut odd = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
            .await
            .unwrap();
        odd.send_text(text).await;
        assert_eq!(closed_with(&mut odd).await.0, 4400, "{text}");
    }

    // A second `connection_init`: 4429.
    let mut again = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    again.send(json!({ "type": "connection_init" })).await;
    assert_eq!(closed_with(&mut again).await.0, 4429);

    // A WebSocket without a GraphQL subprotocol is refused before the upgrade.
    assert_eq!(
        GraphqlSocket::connect(app.addr, "chat").await.err(),
        Some(400)
    );
}

#[tokio::test]
async fn refused_tokens_close_the_connection_with_4403() {
    let app = app_with(|c| c.auth = tokens(&["r"], &["w"], false)).await;
    for payload in [json!({}), json!({ "Authorization": "Bearer nope" })] {
        let mut socket = GraphqlSocket::connect(app.addr, "graphql-transport-ws")
            .await
            .unwrap();
        match socket.init(payload.clone()).await {
            Err(Outcome::Closed(code, reason)) => {
                assert_eq!(code, 4403, "{payload}: {reason}");
                assert!(reason.contains("token"), "{reason}");
            }
            other => panic!("{payload}: {other:?}"),
        }
    }
    // The legacy protocol says so with `connection_error` and closes.
    let mut legacy = GraphqlSocket::connect(app.addr, "graphql-ws")
        .await
        .unwrap();
    assert!(legacy.init(json!({})).await.is_err());
}

#[tokio::test]
async fn operations_are_capped_per_connection_and_per_token() {
    let app = app_with(|c| {
        c.limits.max_subscriptions_per_connection = 2;
        c.limits.max_subscriptions_per_token = 3;
    })
    .await;
    let feed = "subscription { componentEvents { sequence } }";
    for protocol in PROTOCOLS {
        let mut first = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        first.start("a", feed, json!({})).await;
        first.start("b", feed, json!({})).await;
        let refused = first.run("c", feed, json!({})).await;
        assert!(
            matches!(refused, Outcome::Error(_)),
            "{protocol}: {refused:?}"
        );
        assert_eq!(
            refused.code().as_deref(),
            Some("LIMIT_EXCEEDED"),
            "{protocol}"
        );

        // The token (here: no token) runs 2 of its 3 on the first connection: one more fits on another.
        let mut second = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        second.start("a", feed, json!({})).await;
        let refused = second.run("b", feed, json!({})).await;
        assert_eq!(
            refused.code().as_deref(),
            Some("LIMIT_EXCEEDED"),
            "{protocol}: {refused:?}"
        );

        // Completing one gives its place back.
        first.stop("a").await;
        let mut ran = false;
        for attempt in 0..50 {
            let id = format!("retry{attempt}");
            second.start(&id, "{ lastSequence }", json!({})).await;
            if let Outcome::Result(_) = second.outcome_of(&id).await {
                ran = true;
                break;
            }
        }
        assert!(ran, "{protocol}: a place freed by `complete` is given back");
        drop((first, second));
        // Closed connections give their places back too: a fresh connection may run two again.
        assert!(
            common::eventually(Duration::from_secs(10), async || {
                let mut socket = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
                socket.start("x", feed, json!({})).await;
                !matches!(
                    socket.run("y", "{ lastSequence }", json!({})).await,
                    Outcome::Error(_)
                )
            })
            .await,
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn changes_over_websocket_are_recorded_under_the_token_label() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "write w-secret release bot\n").unwrap();
    let app = app_with(|c| {
        c.auth =
            component_repository::api::auth::Tokens::new(&[], &[], Some(&tokens), false).unwrap();
    })
    .await;
    let mut socket = GraphqlSocket::open(app.addr, "graphql-transport-ws", Some("w-secret"))
        .await
        .unwrap();
    for (n, query) in [
        r#"mutation { createModel(input: {name: "m", version: "1"}) { name } }"#,
        r#"mutation { setModelAlias(name: "m", alias: "prod", version: "1") { name } }"#,
    ]
    .iter()
    .enumerate()
    {
        let outcome = socket.run(&n.to_string(), query, json!({})).await;
        assert!(outcome.code().is_none(), "{outcome:?}");
    }
    let history = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth("w-secret")
        .json(&json!({ "query": r#"{ modelAliasHistory(name: "m", alias: "prod") { by } }"# }))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        history["data"]["modelAliasHistory"][0]["by"], "release bot",
        "{history}"
    );
}

/// Sends `/healthz` on a fresh connection and says whether it answered 200.
async fn healthz(app: &TestApp) -> bool {
    let Ok(mut stream) = TcpStream::connect(app.addr).await else {
        return false;
    };
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while !answer.ends_with(b"}") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            _ => return false,
        }
    }
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn idle_upgrades_and_half_open_connections_cannot_take_the_server() {
    let app = app_with(|c| {
        c.connections.max_connections = Some(8);
        c.limits.ws_init_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    // Upgrades that never initialise take every connection slot...
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(
            GraphqlSocket::connect(app.addr, "graphql-transport-ws")
                .await
                .unwrap(),
        );
    }
    // ...so one more upgrade is refused like any connection over the limit.
    assert_eq!(
        GraphqlSocket::connect(app.addr, "graphql-transport-ws")
            .await
            .err(),
        Some(503)
    );
    // Half-open connections pile up beyond the limit, saying nothing.
    let mut half_open = Vec::new();
    for _ in 0..200 {
        half_open.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // The liveness probe still answers, on a connection of its own.
    assert!(
        healthz(&app).await,
        "/healthz answers under connection pressure"
    );
    // The idle upgrades are closed at the init bound, and ordinary requests are served again.
    for socket in &mut idle {
        match socket.closed().await {
            Outcome::Closed(code, _) => assert_eq!(code, 4408),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        common::eventually(Duration::from_secs(10), async || {
            app.client
                .get(app.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await,
        "ordinary requests are served once the idle upgrades are gone"
    );
    drop(half_open);
}

#[tokio::test]
async fn a_stopping_server_says_goodbye_to_websockets() {
    let app = app_with(|_| {}).await;
    let mut socket = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    socket
        .start(
            "feed",
            "subscription { componentEvents { sequence } }",
            json!({}),
        )
        .await;
    // The subscription is running: an operation on the same connection answers after it started.
    assert!(matches!(
        socket.run("q", "{ lastSequence }", json!({})).await,
        Outcome::Result(_)
    ));
    let stopped = tokio::spawn(app.stop());
    match socket.closed().await {
        Outcome::Closed(code, _) => {
            assert_eq!(code, 1001, "going away, not dropped at the grace deadline")
        }
        other => panic!("{other:?}"),
    }
    stopped.await.unwrap();
}

#[tokio::test]
async fn pages_of_other_sites_cannot_open_a_websocket() {
    // A server without tokens: a page elsewhere that could connect would run its mutations.
    let app = app_with(|c| c.limits.cors_origins = vec!["https://dashboard.example".into()]).await;
    let own = format!("http://{}", app.addr);
    for (origin, allowed) in [
        (Some("https://evil.example"), false),
        (Some("null"), false),
        (Some(own.as_str()), true),
        (Some("https://dashboard.example"), true),
        (None, true),
    ] {
        let connected = GraphqlSocket::connect_from(app.addr, "graphql-transport-ws", origin).await;
        match allowed {
            true => assert!(connected.is_ok(), "{origin:?}"),
            false => assert_eq!(connected.err(), Some(403), "{origin:?}"),
        }
    }
    let relaxed = app_with(|c| c.limits.csrf_prevention = false).await;
    let connected = GraphqlSocket::connect_from(
        relaxed.addr,
        "graphql-transport-ws",
        Some("https://evil.example"),
    )
    .await;
    assert!(connected.is_ok(), "CSRF prevention switched off");
}

#[tokio::test]
async fn resolvers_find_their_per_request_data_over_websocket() {
    let app = app_with(|_| {}).await;
    app.ok(
        r#"mutation { createModel(input: {name: "det", version: "1"}) { name } }"#,
        json!({}),
    )
    .await;
    app.ok(
        r#"mutation { createService(input: {id: "uses-det", needs: {availableModels: [{name: "det", version: "1"}]}}) { id } }"#,
        json!({}),
    )
    .await;
    // `model` is batched by a DataLoader that every request gets, whichever transport carried it.
    let query = "{ services { edges { node { needs { availableModels { model { name } } } } } } }";
    for protocol in PROTOCOLS {
        let mut socket = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        let outcome = socket.run("1", query, json!({})).await;
        let Outcome::Result(payload) = outcome else {
            panic!("{protocol}: {outcome:?}")
        };
        assert!(payload.get("errors").is_none(), "{protocol}: {payload}");
        let node = &payload["data"]["services"]["edges"][0]["node"];
        assert_eq!(
            node["needs"]["availableModels"][0]["model"]["name"], "det",
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn operations_sent_right_behind_connection_init_run() {
    // Clients that pipeline (Apollo's subscriptions-transport-ws does) send the first operation with the init.
    let app = app_with(|_| {}).await;
    for protocol in PROTOCOLS {
        for round in 0..20 {
            let mut socket = GraphqlSocket::connect(app.addr, protocol).await.unwrap();
            socket
                .send(json!({ "type": "connection_init", "payload": {} }))
                .await;
            let outcome = socket.run("1", "{ lastSequence }", json!({})).await;
            assert!(
                matches!(outcome, Outcome::Result(_)),
                "{protocol} round {round}: {outcome:?}"
            );
        }
    }
}

#[tokio::test]
async fn completing_and_reusing_an_id_cannot_outrun_the_caps() {
    let app = app_with(|c| c.limits.max_subscriptions_per_connection = 2).await;
    let feed = "subscription { componentEvents { id } }";
    let mut socket = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    // subscribe, complete, subscribe again at once: the id's second life must count like the first.
    for i in 0..20 {
        let id = i.to_string();
        socket.start(&id, feed, json!({})).await;
        socket.stop(&id).await;
        socket.start(&id, feed, json!({})).await;
    }
    // The engine answers in order: its pong says it has read everything before the ping.
    let sync = async |socket: &mut GraphqlSocket| -> Vec<serde_json::Value> {
        socket.send(json!({ "type": "ping" })).await;
        let mut before = Vec::new();
        loop {
            let Some(message) = socket.receive().await else {
                panic!("closed")
            };
            if message["type"] == "pong" {
                return before;
            }
            before.push(message);
        }
    };
    sync(&mut socket).await;
    // Completing every id now answers `complete` for each operation still running: count them.
    for i in 0..20 {
        socket.stop(&i.to_string()).await;
    }
    let completed: Vec<_> = sync(&mut socket)
        .await
        .into_iter()
        .filter(|message| message["type"] == "complete")
        .collect();
    assert!(!completed.is_empty(), "some of the burst ran");
    assert!(
        completed.len() <= 2,
        "at most 2 operations ran on the connection: {completed:?}"
    );
    // And the places are all given back.
    socket.start("again", feed, json!({})).await;
    socket.start("and-again", feed, json!({})).await;
    assert!(sync(&mut socket).await.iter().all(|m| m["type"] != "error"));
}

#[tokio::test]
async fn clients_without_a_token_have_a_budget_per_address() {
    let app = app_with(|c| {
        c.auth = tokens(&["r"], &[], true);
        c.limits.max_subscriptions_per_token = 2;
    })
    .await;
    let feed = "subscription { componentEvents { id } }";
    let mut first = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    first.start("a", feed, json!({})).await;
    first.start("b", feed, json!({})).await;
    let refused = first.run("c", feed, json!({})).await;
    assert_eq!(
        refused.code().as_deref(),
        Some("LIMIT_EXCEEDED"),
        "{refused:?}"
    );
    // Another client, from another address, is not held to the first one's use.
    let mut other = GraphqlSocket::connect_as(app.addr, "graphql-transport-ws", "127.0.0.2").await;
    other.init(json!({})).await.unwrap();
    let outcome = other.run("a", "{ lastSequence }", json!({})).await;
    assert!(matches!(outcome, Outcome::Result(_)), "{outcome:?}");
}

#[tokio::test]
async fn websockets_that_run_nothing_give_their_slot_back() {
    let app = app_with(|c| {
        // What `--header-read-timeout-secs 1` sets: a WebSocket running nothing is an idle keep-alive.
        c.connections.header_read_timeout = std::time::Duration::from_secs(1);
        c.limits.ws_idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let mut idle = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    let mut busy = GraphqlSocket::open(app.addr, "graphql-transport-ws", None)
        .await
        .unwrap();
    busy.start("feed", "subscription { componentEvents { id } }", json!({}))
        .await;
    match idle.closed().await {
        Outcome::Closed(code, reason) => assert_eq!(
            (code, reason.as_str()),
            (1000, "idle: no operation running")
        ),
        other => panic!("{other:?}"),
    }
    // The one with a subscription stays, and still gets events.
    app.create_service("late").await;
    let Outcome::Result(payload) = busy.outcome_of("feed").await else {
        panic!("the subscription ended")
    };
    assert_eq!(payload["data"]["componentEvents"]["id"], "late");
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test]
async fn pings_from_a_client_that_reads_nothing_cost_bounded_memory() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let server = common::process::ServerProcess::start(&dir.path().join("data"), &[]);
    let pid = server.child.id();
    let mut request = format!("{}/graphql", server.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let before = rss_mib(pid);
    // 400,000 pings ask for 51 MB of pongs that the client never reads; no `connection_init` needed.
    let payload = vec![7u8; 125];
    for _ in 0..400_000 {
        if socket
            .send(Message::Ping(payload.clone().into()))
            .await
            .is_err()
        {
            break; // cut off: also bounded
        }
    }
    let grown = rss_mib(pid) - before;
    assert!(
        grown < 24.0,
        "the server grew by {grown:.1} MiB for pongs nobody reads"
    );
}

/// Three services created: three events in the feed.
async fn three_changes(app: &TestApp) {
    for id in ["s1", "s2", "s3"] {
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
            json!({ "id": id }),
        )
        .await;
    }
}

#[tokio::test]
async fn a_replay_whose_after_comes_from_a_variable_default_gets_every_event_it_asked_for() {
    // `after` left out of the variables takes the document's default: a replay, which must not join another
    // client's execution of the same text midway (identical live tails share one).
    let app = app_with(|_| {}).await;
    three_changes(&app).await;
    const RESUME: &str =
        "subscription Resume($after: Long = 0) { componentEvents(after: $after) { sequence id } }";
    let sequences = async |socket: &mut GraphqlSocket| -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match socket.next_result(Duration::from_secs(5)).await {
                Some(Ok(data)) => seen.push(data["componentEvents"]["id"].clone()),
                other => panic!("after {seen:?}: {other:?}"),
            }
        }
        seen
    };
    for protocol in PROTOCOLS {
        let mut first = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        first.start("1", RESUME, json!({})).await;
        assert_eq!(
            sequences(&mut first).await,
            ["s1", "s2", "s3"],
            "{protocol}: the first client's replay"
        );
        // The first one still follows the feed when the second asks for the same replay.
        let mut second = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        second.start("1", RESUME, json!({})).await;
        assert_eq!(
            sequences(&mut second).await,
            ["s1", "s2", "s3"],
            "{protocol}: the second client's replay"
        );
    }
}

#[tokio::test]
async fn nothing_of_an_operation_precedes_connection_ack() {
    // A client that pipelines `connection_init`, a live tail and its `complete` (a view mounted and unmounted at
    // once), or an operation over the cap: graphql-ws clients drop a connection whose first message is not
    // `connection_ack`.
    let app = app_with(|c| c.limits.max_subscriptions_per_connection = 1).await;
    let feed = "subscription { componentEvents { sequence } }";
    for protocol in PROTOCOLS {
        for round in 0..10 {
            let mut socket = GraphqlSocket::connect(app.addr, protocol).await.unwrap();
            use futures_util::SinkExt;
            // All four in one write, as a client that pipelines sends them.
            let (start, stop) = match protocol {
                "graphql-ws" => ("start", "stop"),
                _ => ("subscribe", "complete"),
            };
            let operation = json!({ "query": feed });
            for message in [
                json!({ "type": "connection_init", "payload": {} }),
                json!({ "type": start, "id": "1", "payload": operation }),
                json!({ "type": start, "id": "2", "payload": operation }),
                json!({ "type": stop, "id": "1" }),
            ] {
                socket
                    .raw()
                    .feed(Message::text(message.to_string()))
                    .await
                    .unwrap();
            }
            socket.raw().flush().await.unwrap();
            let first = socket.receive().await.expect("an answer");
            assert_eq!(
                first["type"], "connection_ack",
                "{protocol} round {round}: {first}"
            );
            // Then both answers, each for its operation.
            let mut answers = Vec::new();
            while answers.len() < 2 {
                let message = socket.receive().await.expect("the connection stays open");
                if message["type"] != "ka" {
                    answers.push((message["id"].clone(), message["type"].clone()));
                }
            }
            answers.sort_by_key(|(id, _)| id.to_string());
            assert_eq!(
                answers,
                [
                    (json!("1"), json!("complete")),
                    (json!("2"), json!("error"))
                ],
                "{protocol} round {round}"
            );
        }
    }
}

/// Each of `sockets` gets the next `componentEvents` result, the event of component `id`.
async fn each_gets_the_event_of(sockets: &mut [&mut GraphqlSocket], id: &str) {
    for socket in sockets {
        let data = socket.next_result(Duration::from_secs(10)).await;
        assert_eq!(data, Some(Ok(json!({ "componentEvents": { "id": id } }))));
    }
}

#[tokio::test]
async fn members_of_a_shared_live_tail_leave_and_fail_on_their_own() {
    let app = app_with(|_| {}).await;
    let feed = "subscription { componentEvents { id } }";
    let bad = r#"subscription { componentEvents(runnableOn: {platform: {os: "linux", arch: "no such arch"}}) { id } }"#;
    let create = async |id: &str| {
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
            json!({ "id": id }),
        )
        .await;
    };
    for protocol in PROTOCOLS {
        let mut a = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        let mut b = GraphqlSocket::open(app.addr, protocol, None).await.unwrap();
        a.start("1", feed, json!({})).await;
        b.start("1", feed, json!({})).await;
        assert!(
            app.until_event_subscribers("graphql_ws", 2.0).await,
            "{protocol}: both follow"
        );
        let first = format!("{protocol}-1");
        create(&first).await;
        each_gets_the_event_of(&mut [&mut a, &mut b], &first).await;
        // One completes its own id and takes it again at once: the other goes on, and each gets the next
        // event once.
        a.stop("1").await;
        let message = a.receive().await.unwrap();
        assert_eq!(
            (&message["type"], &message["id"]),
            (&json!("complete"), &json!("1"))
        );
        a.start("1", feed, json!({})).await;
        assert!(
            app.until_event_subscribers("graphql_ws", 2.0).await,
            "{protocol}: both follow again"
        );
        let second = format!("{protocol}-2");
        create(&second).await;
        each_gets_the_event_of(&mut [&mut a, &mut b], &second).await;
        // Input no device could be fails for each that sends it, with its code, and leaves the others be.
        for socket in [&mut a, &mut b] {
            let outcome = socket.run("2", bad, json!({})).await;
            assert_eq!(
                outcome.code().as_deref(),
                Some("INVALID_INPUT"),
                "{protocol}: {outcome:?}"
            );
            // Then its end.
            let message = socket.receive().await.unwrap();
            assert_eq!(
                (&message["type"], &message["id"]),
                (&json!("complete"), &json!("2"))
            );
        }
        let third = format!("{protocol}-3");
        create(&third).await;
        each_gets_the_event_of(&mut [&mut a, &mut b], &third).await;
        drop((a, b));
        assert!(
            app.until_event_subscribers("graphql_ws", 0.0).await,
            "{protocol}: both gone"
        );
    }
}

#[tokio::test]
async fn a_token_never_shares_an_operation_it_may_not_run() {
    // The same text under a write token and a read token: the read token's is refused, not joined to the other.
    let app = app_with(|c| c.auth = tokens(&["r"], &["w"], false)).await;
    let document =
        "subscription S { componentEvents { id } } mutation M { deleteService(id: \"x\") }";
    for protocol in PROTOCOLS {
        let mut writer = GraphqlSocket::open(app.addr, protocol, Some("w"))
            .await
            .unwrap();
        let start_s = json!({ "type": if protocol == "graphql-ws" { "start" } else { "subscribe" }, "id": "1",
            "payload": { "query": document, "operationName": "S" } });
        writer.send(start_s.clone()).await;
        assert!(
            app.until_event_subscribers("graphql_ws", 1.0).await,
            "{protocol}: the writer follows"
        );
        let mut reader = GraphqlSocket::open(app.addr, protocol, Some("r"))
            .await
            .unwrap();
        reader.send(start_s).await;
        let outcome = reader.outcome_of("1").await;
        assert_eq!(
            outcome.code().as_deref(),
            Some("FORBIDDEN"),
            "{protocol}: {outcome:?}"
        );
        drop((writer, reader));
        assert!(app.until_event_subscribers("graphql_ws", 0.0).await);
    }
}
