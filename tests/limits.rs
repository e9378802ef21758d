//! Limits over HTTP: GraphQL depth, complexity and aliases, introspection, CSRF prevention, CORS, slow bodies, and
//! the same limits on the OCI routes.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Config, TestApp, bytes, config_with, tokens};
use serde_json::json;

async fn app_with(change: impl FnOnce(&mut Config)) -> TestApp {
    common::embedded(config_with(change)).await
}

#[tokio::test]
async fn graphql_depth_complexity_and_aliases_are_bounded() {
    let app = app_with(|c| {
        c.limits.max_depth = 4;
        c.limits.max_complexity = 20;
    })
    .await;
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

    let app = app_with(|_| {}).await;
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
    let open = app_with(|_| {}).await;
    open.ok("{ __schema { queryType { name } } }", json!({}))
        .await;
    let closed = app_with(|c| c.limits.introspection = false).await;
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
    let app = app_with(|_| {}).await;
    app.create_service("svc").await;
    // A multipart upload without a preflight-forcing header: what a form on another site could send.
    let form = testkit::graphql::upload_form(
        "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
        json!({}),
        bytes(1000, 1),
        "f.zip",
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

    let off = app_with(|c| c.limits.csrf_prevention = false).await;
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
    let app = app_with(|c| c.limits.cors_origins = vec!["https://dash.example.org".into()]).await;
    let allowed = preflight(&app, "https://dash.example.org").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://dash.example.org"
    );
    let other = preflight(&app, "https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let none = app_with(|_| {}).await;
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
    let app = app_with(|c| c.limits.body_idle_timeout = Duration::from_secs(1)).await;
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

/// A refusal sent before the request's body was read closes the connection and says so: a client that reused it
/// would have its next request fail, whenever the server could not drain the whole body at once.
#[tokio::test]
async fn a_response_sent_before_the_request_body_was_read_closes_the_connection() {
    let app = app_with(|c| c.auth = tokens(&["r"], &["w"], false)).await;
    let body = json!({ "query": "{ services { totalCount } }", "padding": "x".repeat(64 * 1024) });
    let refused = app
        .client
        .post(app.url("/graphql"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["connection"], "close");
    let answered = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth("r")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert!(
        answered.headers().get("connection").is_none(),
        "{:?}",
        answered.headers()
    );
}

/// Status and body of a GraphQL POST of `body` with an optional token.
async fn post(
    app: &TestApp,
    body: &serde_json::Value,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = app.client.post(app.url("/graphql")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn code(body: &serde_json::Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// Documents nested thousands of levels deep in a few kilobytes: list values, input objects, directive arguments.
/// Each is refused before it is parsed (the parser recurses, the stack would overflow), and the server lives on.
#[tokio::test]
async fn deeply_nested_documents_are_refused_without_a_crash() {
    let n = 3_000; // about 6 KB of brackets
    let documents = [
        format!(
            "{{ services(filter: {{ text: {}\"x\"{} }}) {{ totalCount }} }}",
            "[".repeat(n),
            "]".repeat(n)
        ),
        format!(
            "{{ services(filter: {}{}) {{ totalCount }} }}",
            "{a: ".repeat(n),
            "}".repeat(n)
        ),
        format!(
            "{{ services @include(if: {}true{}) {{ totalCount }} }}",
            "[".repeat(n),
            "]".repeat(n)
        ),
        format!(
            "{}services {{ totalCount }}{}",
            "{ ... on QueryRoot ".repeat(n),
            "}".repeat(n)
        ),
    ];
    let app = app_with(|c| c.auth = tokens(&["r"], &["w"], false)).await;
    for document in &documents {
        // Without a token the document is not even read as GraphQL.
        let (status, body) = post(&app, &json!({ "query": document }), None).await;
        assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
        let (status, body) = post(&app, &json!({ "query": document }), Some("r")).await;
        assert_eq!((status, code(&body)), (400, "INVALID_INPUT"), "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("nests"),
            "{body}"
        );
        let batch = json!([{ "query": "{ __typename }" }, { "query": document }]);
        let (status, body) = post(&app, &batch, Some("r")).await;
        assert_eq!((status, code(&body)), (400, "INVALID_INPUT"), "{body}");
    }
    let open = app_with(|c| c.limits.csrf_prevention = false).await;
    for document in &documents {
        let (status, body) = post(&open, &json!({ "query": document }), None).await;
        assert_eq!((status, code(&body)), (400, "INVALID_INPUT"), "{body}");
        if document.len() < 10_000 {
            let response = open
                .client
                .get(open.url("/graphql"))
                .query(&[("query", document)])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400);
        }
        // A multipart request: refused before its file is read.
        let form = testkit::graphql::upload_form(document, json!({}), bytes(1000, 1), "f.zip");
        let response = open
            .client
            .post(open.url("/graphql"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    // The deepest document the check lets through goes the whole way through parsing and validation unharmed.
    let deepest = format!(
        "{{ services(filter: {{search: {}\"x\"{}}}) {{ totalCount }} }}",
        "[".repeat(61),
        "]".repeat(61)
    );
    let (status, body) = post(&open, &json!({ "query": deepest }), None).await;
    assert_eq!((status, code(&body)), (200, "INVALID_INPUT"), "{body}");
    assert!(
        !body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nests"),
        "{body}"
    );
    let deeper = deepest.replacen('[', "[[", 1).replacen(']', "]]", 1);
    let (status, body) = post(&open, &json!({ "query": deeper }), None).await;
    assert_eq!((status, code(&body)), (400, "INVALID_INPUT"), "{body}");
    // Brackets inside strings are text, not nesting.
    let text = "[{(".repeat(80);
    open.ok(
        "query($t: String) { services(filter: {search: $t}) { totalCount } }",
        json!({ "t": text }),
    )
    .await;
    open.ok(
        &format!("{{ services(filter: {{search: \"{text}\"}}) {{ totalCount }} }}"),
        json!({}),
    )
    .await;
    for app in [&app, &open] {
        assert_eq!(
            app.get("/healthz").await.status(),
            200,
            "the server is alive"
        );
    }
}

/// A JSON batch is one request: its length is bounded, and the alias and complexity limits hold for all its
/// operations together.
#[tokio::test]
async fn batches_are_bounded_as_a_whole() {
    let app = app_with(|_| {}).await;
    let batch = |n: usize, query: &str| {
        json!(
            (0..n)
                .map(|_| json!({ "query": query }))
                .collect::<Vec<_>>()
        )
    };
    let (status, body) = post(&app, &batch(101, "{ __typename }"), None).await;
    assert_eq!((status, code(&body)), (400, "INVALID_INPUT"), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 100"),
        "{body}"
    );
    let (status, body) = post(&app, &batch(100, "{ __typename }"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 100);

    // The issue's case: 80 operations, each within the alias and complexity limits.
    let aliases: String = (0..25)
        .map(|i| format!("a{i}: services(first: 100) {{ edges {{ node {{ id description }} }} }} "))
        .collect();
    let (status, body) = post(&app, &batch(80, &format!("{{ {aliases} }}")), None).await;
    assert_eq!((status, code(&body)), (200, "INVALID_INPUT"), "{body:.400}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("2000 aliases"),
        "{body}"
    );

    let small = app_with(|c| {
        c.limits.max_batch = 15;
        c.limits.max_complexity = 20;
    })
    .await;
    let (status, body) = post(&small, &batch(16, "{ __typename }"), None).await;
    assert_eq!((status, code(&body)), (400, "INVALID_INPUT"), "{body}");
    // `services { totalCount }` costs 2: the request's budget of 20 runs 10 of 15, the others are refused.
    let (status, body) = post(&small, &batch(15, "{ services { totalCount } }"), None).await;
    assert_eq!(status, 200);
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 15);
    let ran = answers
        .iter()
        .filter(|a| a["data"]["services"]["totalCount"] == 0)
        .count();
    assert_eq!(ran, 10, "{body}");
    for refused in answers.iter().filter(|a| a.get("errors").is_some()) {
        assert_eq!(code(refused), "INVALID_INPUT");
        assert!(
            refused["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("per request"),
            "{refused}"
        );
    }
}

/// Files per multipart request and their bytes in all are bounded, before and while they are read.
#[tokio::test]
async fn multipart_files_are_bounded_per_request() {
    let app = common::embedded(config_with(|c| {
        c.uploads.max_size = 10_000;
        c.limits.max_files = 2;
    }))
    .await;
    app.ok(
        "mutation { a: createService(input: {id: \"a\"}) { id } b: createService(input: {id: \"b\"}) { id }
                    c: createService(input: {id: \"c\"}) { id } }",
        json!({}),
    )
    .await;
    let send = |ids: Vec<&'static str>, size: usize| {
        let parameters: Vec<String> = ids.iter().map(|id| format!("${id}: Upload!")).collect();
        let uploads: String = ids
            .iter()
            .map(|id| format!("{id}: uploadServiceFile(id: \"{id}\", file: ${id}) {{ id }} "))
            .collect();
        let files = ids
            .iter()
            .map(|id| {
                let part = reqwest::multipart::Part::bytes(bytes(size, 1)).file_name("f.zip");
                (id.to_string(), part)
            })
            .collect();
        let form = testkit::graphql::files_form(
            &format!("mutation({}) {{ {uploads} }}", parameters.join(", ")),
            json!({}),
            files,
        );
        testkit::graphql::post_upload(&app.client, &app.url(""), form).send()
    };
    let response = send(vec!["a", "b", "c"], 100).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2"),
        "{body}"
    );
    // Two files of 6,000 bytes: each within the 10,000-byte limit, not both.
    let response = send(vec!["a", "b"], 6_000).await.unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE", "{body}");
    let files = app
        .ok(
            "{ services { edges { node { id file { size } } } } }",
            json!({}),
        )
        .await;
    for edge in files["services"]["edges"].as_array().unwrap() {
        assert_eq!(
            edge["node"]["file"],
            serde_json::Value::Null,
            "nothing attached: {files}"
        );
    }
    let response = send(vec!["a", "b"], 4_000).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// With introspection off, error messages do not suggest field names either.
#[tokio::test]
async fn no_suggestions_without_introspection() {
    let query = "{ servic { totalCount } }";
    let open = app_with(|_| {}).await;
    let body = open.gql(query, json!({})).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean"),
        "{body}"
    );
    let closed = app_with(|c| c.limits.introspection = false).await;
    let body = closed.gql(query, json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert_eq!(code(&body), "INVALID_INPUT");
    assert!(
        !message.contains("Did you mean") && !message.contains("\"services\""),
        "{message}"
    );
}

/// OCI pushes stream under the same limits as every upload: the size limit (413, nothing kept) and the body idle
/// timeout (408); listings are paged at most 1000 at a time.
#[tokio::test]
async fn oci_routes_obey_the_upload_and_page_limits() {
    let app = app_with(|c| c.uploads.max_size = 1024).await;
    let data = bytes(2048, 9);
    let digest = format!("sha256:{}", common::sha256_hex(&data));
    let response = app
        .client
        .post(app.url(&format!("/v2/models/m/blobs/uploads/?digest={digest}")))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "PAYLOAD_TOO_LARGE", "{body}");
    let head = app
        .client
        .head(app.url(&format!("/v2/models/m/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404, "nothing of the refused blob is kept");
    // Chunks count towards the same limit.
    let session = app
        .client
        .post(app.url("/v2/models/m/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 202);
    let location = session.headers()["location"].to_str().unwrap().to_string();
    for (chunk, status) in [(bytes(1000, 1), 202), (bytes(1000, 2), 413)] {
        let patch = app
            .client
            .patch(app.url(&location))
            .body(chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(patch.status(), status);
    }
    let gone = app.get(&location).await;
    assert_eq!(gone.status(), 404, "an upload over the limit is dropped");
    let (status, body) = {
        let response = app.get("/v2/_catalog?n=1001").await;
        (
            response.status(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID");

    let app = app_with(|c| c.limits.body_idle_timeout = Duration::from_secs(1)).await;
    let addr = app.addr;
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let zeros = "0".repeat(64);
        write!(
            stream,
            "POST /v2/models/m/blobs/uploads/?digest=sha256:{zeros} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc"
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

/// One client cannot take every pending OCI upload: each caller holds at most 32 sessions or blobs waiting for a
/// manifest, and a chunk sent out of order leaves the session where it was, for the client to resume.
#[tokio::test]
async fn oci_pending_uploads_are_capped_per_caller_and_survive_a_chunk_out_of_order() {
    let app = app_with(|c| c.auth = tokens(&[], &["w1", "w2"], false)).await;
    let open = |token: &'static str| {
        app.client
            .post(app.url("/v2/models/m/blobs/uploads/"))
            .bearer_auth(token)
            .send()
    };
    let mut locations = Vec::new();
    for _ in 0..32 {
        let session = open("w1").await.unwrap();
        assert_eq!(session.status(), 202);
        locations.push(session.headers()["location"].to_str().unwrap().to_string());
    }
    let refused = open("w1").await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    assert_eq!(
        open("w2").await.unwrap().status(),
        202,
        "another caller still pushes"
    );

    let location = &locations[0];
    let patch = |range: &'static str, body: &'static [u8]| {
        app.client
            .patch(app.url(location))
            .bearer_auth("w1")
            .header("content-range", range)
            .body(body)
            .send()
    };
    assert_eq!(patch("0-2", b"abc").await.unwrap().status(), 202);
    assert_eq!(patch("5-7", b"def").await.unwrap().status(), 416);
    let status = app
        .client
        .get(app.url(location))
        .bearer_auth("w1")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 204, "the session is still there");
    assert_eq!(status.headers()["range"], "0-2");
    assert_eq!(
        patch("3-5", b"def").await.unwrap().status(),
        202,
        "and resumes"
    );
}

/// `POST /pipelines/resolve` reads a JSON body whole, so it is bounded: a body over 2 MiB is a 413, one that stalls
/// a 408, JSON nested past the parser's depth and a pipeline of more parts than are resolved at once are 400s;
/// the server answers the next request as usual.
#[tokio::test]
async fn pipeline_resolution_bodies_are_bounded() {
    let app = app_with(|c| c.limits.body_idle_timeout = Duration::from_secs(1)).await;
    let send = async |body: Vec<u8>| {
        let response = app
            .client
            .post(app.url("/pipelines/resolve"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response
                .json::<serde_json::Value>()
                .await
                .unwrap_or_default(),
        )
    };
    // Over 2 MiB: inline parameters of a step, as a pipeline file may carry them.
    let parameters = "0,".repeat(1024 * 1024 + 1);
    let big = format!(
        r#"{{"preprocessing": [{{"id": "t", "parameters": {{"table": [{parameters}0]}}}}], "device": {{}}}}"#
    );
    let (status, body) = send(big.into_bytes()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{body}"
    );
    // Nested 100 000 deep in a few hundred kilobytes: refused by the parser's depth limit, no stack overflow.
    let deep = format!(
        r#"{{"setup": {}{}, "device": {{}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, body) = send(deep.into_bytes()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{body}"
    );
    // More parts than one resolution takes.
    let steps: Vec<serde_json::Value> = (0..300)
        .map(|i| json!({ "id": format!("t{i}"), "parameters": {} }))
        .collect();
    let many = json!({ "preprocessing": steps, "device": {} });
    let (status, body) = send(serde_json::to_vec(&many).unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("at most"),
        "{body}"
    );
    // A body that stalls.
    let addr = app.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "POST /pipelines/resolve HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"device\""
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, body) = send(br#"{"device": {"ram": 4}}"#.to_vec()).await;
    assert_eq!((status, &body["fits"]), (200, &json!(true)), "{body}");
}

/// Device reports obey the same limits as every JSON route: a body over 64 KiB is a 413 and a stalled one a 408,
/// and neither leaves a report behind.
#[tokio::test]
async fn device_reports_obey_the_body_limits() {
    let app = app_with(|c| c.limits.body_idle_timeout = Duration::from_secs(1)).await;
    let huge = json!({"device": {"libraries": [{"name": "x".repeat(70_000), "version": "1"}]}});
    let response = app
        .client
        .post(app.url("/devices/cam-1/report"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let addr = app.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "POST /devices/cam-1/report HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"health\""
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let data = app.ok(r#"{ devices { id } }"#, json!({})).await;
    assert_eq!(data["devices"], json!([]));
}
