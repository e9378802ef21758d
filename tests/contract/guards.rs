//! One guard path for every transport: each operation of the schema, sent over HTTP and over WebSocket (both
//! subprotocols) with no token, a read token, a device token and a write token, is allowed or refused alike, and a
//! refused write changes nothing.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::Starter;
use crate::common::ws::{GraphqlSocket, Outcome, PROTOCOLS};
use crate::common::{Config, TestApp, config_with, test_config, tokens};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Read,
    Write,
    /// A read that needs a write token, refused by its resolver (`webhooks`: their URLs say where changes go).
    Manage,
}

/// Every root field of the schema, in an operation that reaches it. `every_root_field_is_in_the_matrix` fails
/// when a field is added without joining this list.
const OPERATIONS: &[(&str, Need, &str)] = &[
    (
        "model",
        Need::Read,
        r#"{ model(name: "m", version: "1") { name } }"#,
    ),
    (
        "modelAliasHistory",
        Need::Read,
        r#"{ modelAliasHistory(name: "m", alias: "prod") { version } }"#,
    ),
    (
        "transformation",
        Need::Read,
        r#"{ transformation(id: "t") { id } }"#,
    ),
    (
        "service",
        Need::Read,
        r#"{ service(id: "guarded") { id } }"#,
    ),
    (
        "inferencer",
        Need::Read,
        r#"{ inferencer(id: "i") { id } }"#,
    ),
    ("models", Need::Read, "{ models { totalCount } }"),
    (
        "transformations",
        Need::Read,
        "{ transformations { totalCount } }",
    ),
    ("services", Need::Read, "{ services { totalCount } }"),
    ("inferencers", Need::Read, "{ inferencers { totalCount } }"),
    (
        "events",
        Need::Read,
        "{ events(first: 1) { edges { cursor } } }",
    ),
    ("webhooks", Need::Manage, "{ webhooks { id } }"),
    ("lastSequence", Need::Read, "{ lastSequence }"),
    (
        "devices",
        Need::Read,
        r#"{ devices(filter: {hardwareClass: "unknown"}) { id } }"#,
    ),
    ("device", Need::Read, r#"{ device(id: "cam") { id } }"#),
    ("rollout", Need::Read, r#"{ rollout(id: "none") { id } }"#),
    ("rollouts", Need::Read, r#"{ rollouts(model: "m") { id } }"#),
    ("feedId", Need::Read, "{ feedId }"),
    ("mirror", Need::Read, "{ mirror { upstream } }"),
    (
        "runnableOn",
        Need::Read,
        "{ runnableOn(device: {ram: 4}) { totalCount } }",
    ),
    (
        "componentEvents",
        Need::Read,
        "subscription { componentEvents(after: 0) { sequence } }",
    ),
    (
        "resolvePipeline",
        Need::Read,
        r#"{ resolvePipeline(device: {ram: 4}, pipeline: {services: ["guarded"]}) { fits } }"#,
    ),
    (
        "pipelineResolutions",
        Need::Read,
        r#"subscription { pipelineResolutions(device: {ram: 4}, pipeline: {services: ["guarded"]}) { fits } }"#,
    ),
    (
        "createWebhook",
        Need::Write,
        r#"mutation { createWebhook(input: {url: "https://example.org/hook", secret: "s"}) { id } }"#,
    ),
    (
        "deleteWebhook",
        Need::Write,
        r#"mutation { deleteWebhook(id: "none") }"#,
    ),
    (
        "createModel",
        Need::Write,
        r#"mutation { createModel(input: {name: "m", version: "1"}) { name } }"#,
    ),
    (
        "updateModel",
        Need::Write,
        r#"mutation { updateModel(name: "m", version: "1", input: {description: "d"}) { name } }"#,
    ),
    (
        "setModelAlias",
        Need::Write,
        r#"mutation { setModelAlias(name: "m", alias: "prod", version: "1") { name } }"#,
    ),
    (
        "startRollout",
        Need::Write,
        r#"mutation { startRollout(input: {model: "m", alias: "prod", version: "2", steps: [50], stepSeconds: 60}) { id } }"#,
    ),
    (
        "pauseRollout",
        Need::Write,
        r#"mutation { pauseRollout(id: "none") { id } }"#,
    ),
    (
        "resumeRollout",
        Need::Write,
        r#"mutation { resumeRollout(id: "none") { id } }"#,
    ),
    (
        "abortRollout",
        Need::Write,
        r#"mutation { abortRollout(id: "none") { id } }"#,
    ),
    (
        "deleteModelAlias",
        Need::Write,
        r#"mutation { deleteModelAlias(name: "m", alias: "prod") }"#,
    ),
    (
        "addSignature",
        Need::Write,
        r#"mutation { addSignature(kind: SERVICE, id: "guarded", bundle: "{}") { id } }"#,
    ),
    (
        "lockModel",
        Need::Write,
        r#"mutation { lockModel(name: "m", version: "1") { name } }"#,
    ),
    (
        "lockTransformation",
        Need::Write,
        r#"mutation { lockTransformation(id: "t") { id } }"#,
    ),
    (
        "lockService",
        Need::Write,
        r#"mutation { lockService(id: "guarded") { id } }"#,
    ),
    (
        "lockInferencer",
        Need::Write,
        r#"mutation { lockInferencer(id: "i") { id } }"#,
    ),
    (
        "deleteModel",
        Need::Write,
        r#"mutation { deleteModel(name: "m", version: "2") }"#,
    ),
    (
        "uploadModelFile",
        Need::Write,
        r#"mutation($f: Upload!) { uploadModelFile(name: "m", version: "1", file: $f) { name } }"#,
    ),
    (
        "createTransformation",
        Need::Write,
        r#"mutation { createTransformation(input: {id: "t"}) { id } }"#,
    ),
    (
        "updateTransformation",
        Need::Write,
        r#"mutation { updateTransformation(id: "t", input: {description: "d"}) { id } }"#,
    ),
    (
        "deleteTransformation",
        Need::Write,
        r#"mutation { deleteTransformation(id: "t2") }"#,
    ),
    (
        "uploadTransformationFile",
        Need::Write,
        r#"mutation($f: Upload!) { uploadTransformationFile(id: "t", file: $f) { id } }"#,
    ),
    (
        "createService",
        Need::Write,
        r#"mutation { createService(input: {id: "s"}) { id } }"#,
    ),
    (
        "updateService",
        Need::Write,
        r#"mutation { updateService(id: "s", input: {description: "d"}) { id } }"#,
    ),
    (
        "deleteService",
        Need::Write,
        r#"mutation { deleteService(id: "s2") }"#,
    ),
    (
        "uploadServiceFile",
        Need::Write,
        r#"mutation($f: Upload!) { uploadServiceFile(id: "s", file: $f) { id } }"#,
    ),
    (
        "createInferencer",
        Need::Write,
        r#"mutation { createInferencer(input: {id: "i"}) { id } }"#,
    ),
    (
        "updateInferencer",
        Need::Write,
        r#"mutation { updateInferencer(id: "i", input: {description: "d"}) { id } }"#,
    ),
    (
        "deleteInferencer",
        Need::Write,
        r#"mutation { deleteInferencer(id: "i2") }"#,
    ),
    (
        "uploadInferencerFile",
        Need::Write,
        r#"mutation($f: Upload!) { uploadInferencerFile(id: "i", file: $f) { id } }"#,
    ),
];

const READ: &str = "guard-read";
const WRITE: &str = "guard-write";
/// A device token: it reads and reports (REST only), so GraphQL treats it as a read token.
const DEVICE: &str = "guard-device";

fn options(public_reads: bool) -> Config {
    config_with(|c| {
        c.auth = tokens(&[READ], &[WRITE], public_reads).with_device_tokens(&[DEVICE.into()])
    })
}

/// The refusal `(code, HTTP status)` an operation needing `need` gets with `token`, or `None` when it runs.
fn refusal(public_reads: bool, token: Option<&str>, need: Need) -> Option<(&'static str, u16)> {
    match (token, need) {
        (Some(WRITE), _) => None,
        (Some(_), Need::Read) => None,
        (Some(_), Need::Write) => Some(("FORBIDDEN", 403)),
        (Some(_), Need::Manage) => Some(("FORBIDDEN", 200)),
        (None, _) if !public_reads => Some(("UNAUTHENTICATED", 401)),
        (None, Need::Read) => None,
        (None, Need::Write) => Some(("UNAUTHENTICATED", 401)),
        (None, Need::Manage) => Some(("FORBIDDEN", 200)),
    }
}

fn code_of(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

fn is_refusal(code: Option<&str>) -> bool {
    matches!(code, Some("UNAUTHENTICATED" | "FORBIDDEN"))
}

/// What changes leave behind: the feed's head and the webhooks.
async fn footprint(app: &TestApp) -> Value {
    let (_, body) = app
        .gql_as(Some(WRITE), "{ lastSequence webhooks { id } }")
        .await;
    body["data"].clone()
}

/// Runs the whole matrix on one server; tokens that cannot write go first, and must leave no trace.
async fn matrix(app: &TestApp, public_reads: bool) {
    // One change, so that a subscription from the feed's start has an event to deliver.
    let (status, _) = app
        .gql_as(
            Some(WRITE),
            r#"mutation { createService(input: {id: "guarded"}) { id } }"#,
        )
        .await;
    assert_eq!(status, 200);
    let before = footprint(app).await;
    for token in [None, Some(READ), Some(DEVICE), Some(WRITE)] {
        for (field, need, query) in OPERATIONS {
            let expected = refusal(public_reads, token, *need);
            let (status, body) = app.gql_as(token, query).await;
            let what = format!("HTTP {field} with {token:?} (public reads: {public_reads})");
            match expected {
                Some((code, http)) => {
                    assert_eq!(
                        (status, code_of(&body)),
                        (http, Some(code)),
                        "{what}: {body}"
                    )
                }
                None => assert!(!is_refusal(code_of(&body)), "{what}: {body}"),
            }
        }
        for protocol in PROTOCOLS {
            let what = format!("{protocol} with {token:?} (public reads: {public_reads})");
            let mut socket = match GraphqlSocket::open(app.addr, protocol, token).await {
                Ok(socket) => socket,
                Err(refused) => {
                    // A connection that may not even read is refused at `connection_init`.
                    assert_eq!(
                        refusal(public_reads, token, Need::Read),
                        Some(("UNAUTHENTICATED", 401)),
                        "{what}"
                    );
                    match refused {
                        Outcome::Closed(code, _) => assert_eq!(code, 4403, "{what}"),
                        Outcome::Error(payload) => {
                            assert!(protocol == "graphql-ws", "{what}: {payload}")
                        }
                        other => panic!("{what}: {other:?}"),
                    }
                    continue;
                }
            };
            for (n, (field, need, query)) in OPERATIONS.iter().enumerate() {
                let id = n.to_string();
                let outcome = socket.run(&id, query, json!({})).await;
                let code = outcome.code();
                match refusal(public_reads, token, *need) {
                    Some((expected, _)) => {
                        assert_eq!(
                            code.as_deref(),
                            Some(expected),
                            "{what}: {field}: {outcome:?}"
                        )
                    }
                    None => {
                        assert!(
                            matches!(outcome, Outcome::Result(_)),
                            "{what}: {field}: {outcome:?}"
                        );
                        assert!(!is_refusal(code.as_deref()), "{what}: {field}: {outcome:?}");
                    }
                }
                if *need == Need::Read && field.starts_with("component") {
                    socket.stop(&id).await;
                }
            }
        }
        if token != Some(WRITE) {
            assert_eq!(
                footprint(app).await,
                before,
                "refused writes changed nothing ({token:?})"
            );
        }
    }
    assert_ne!(
        footprint(app).await,
        before,
        "the write token's operations ran"
    );
}

pub async fn every_operation_is_authorized_alike_on_every_transport(start: Starter) {
    for public_reads in [false, true] {
        let app = start(options(public_reads)).await;
        matrix(&app, public_reads).await;
    }
}

pub async fn every_root_field_is_in_the_matrix(start: Starter) {
    let app = start(test_config()).await;
    let body = app
        .ok(
            "{ __schema { queryType { fields { name } } mutationType { fields { name } }
                subscriptionType { fields { name } } } }",
            json!({}),
        )
        .await;
    let schema = &body["__schema"];
    let fields: BTreeSet<&str> = ["queryType", "mutationType", "subscriptionType"]
        .iter()
        .flat_map(|root| schema[root]["fields"].as_array().unwrap())
        .map(|field| field["name"].as_str().unwrap())
        .collect();
    let covered: BTreeSet<&str> = OPERATIONS.iter().map(|(field, _, _)| *field).collect();
    assert_eq!(fields, covered, "every root field has a row in OPERATIONS");
}

/// `POST /pipelines/resolve` asks a question with a body: it is a read, allowed and refused as GraphQL's
/// `resolvePipeline` is, while the REST POSTs that write still need a write token.
pub async fn pipeline_resolution_is_a_read_on_every_transport(start: Starter) {
    for public_reads in [false, true] {
        let app = start(options(public_reads)).await;
        for token in [None, Some(READ), Some(WRITE)] {
            let what = format!("with {token:?} (public reads: {public_reads})");
            let send = async |path: &str, body: Value| {
                let mut request = app.client.post(app.url(path)).json(&body);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap_or_default())
            };
            let (status, body) = send(
                "/pipelines/resolve",
                json!({ "preprocessing": [{"id": "t", "parameters": {}}], "device": {"ram": 4} }),
            )
            .await;
            match refusal(public_reads, token, Need::Read) {
                Some((code, http)) => {
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (http, Some(code)),
                        "{what}: {body}"
                    )
                }
                None => {
                    assert_eq!(status, 200, "{what}: {body}");
                    assert_eq!(body["problems"][0]["code"], "MISSING_COMPONENT", "{what}");
                }
            }
            let (graphql_status, graphql) = app
                .gql_as(token, r#"{ resolvePipeline(device: {ram: 4}, pipeline: {preprocessing: ["t"]}) { fits } }"#)
                .await;
            assert_eq!(
                graphql_status, status,
                "{what}: REST and GraphQL alike: {graphql}"
            );
            let (status, body) = send("/service", json!({ "id": "written" })).await;
            match refusal(public_reads, token, Need::Write) {
                Some((code, http)) => {
                    assert_eq!(
                        (status, body["code"].as_str()),
                        (http, Some(code)),
                        "{what}: {body}"
                    )
                }
                None => assert_eq!(status, 201, "{what}: {body}"),
            }
        }
    }
}

/// A GraphQL multipart upload is kept only when its HTTP body ends cleanly too: complete to its closing delimiter
/// but short of its `Content-Length`, or chunked without its last chunk, it attaches nothing.
pub async fn truncated_graphql_uploads_are_refused(start: Starter) {
    let app = start(config_with(|c| {
        c.limits.body_idle_timeout = std::time::Duration::from_secs(1);
    }))
    .await;
    app.create_service("svc").await;
    let boundary = "XyZ";
    let data = crate::common::bytes(20_000, 11);
    let operations = json!({
        "query": "mutation($f: Upload!) { uploadServiceFile(id: \"svc\", file: $f) { file { sha256 } } }",
        "variables": { "f": null }
    });
    let mut whole = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\": [\"variables.f\"]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.zip\"\r\n\r\n"
    )
    .into_bytes();
    whole.extend_from_slice(&data);
    whole.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = |framing: &str| {
        format!(
            "POST /graphql HTTP/1.1\r\nhost: x\r\nconnection: close\r\napollo-require-preflight: true\r\n\
             content-type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n"
        )
    };
    let file_of_svc = async || {
        let data = app
            .ok(r#"{ service(id: "svc") { file { sha256 } } }"#, json!({}))
            .await;
        data["service"]["file"].clone()
    };
    for (why, head, body, close) in super::rest::cut_off_framings(head, &whole) {
        let answer = super::rest::raw_request(&app, &head, &body, close).await;
        let status = answer.get(9..12).unwrap_or_default();
        assert!(
            (close && answer.is_empty())
                || (status.starts_with('4') && answer.contains("\"code\"")),
            "{why}: {answer}"
        );
        assert_eq!(file_of_svc().await, Value::Null, "{why}: nothing attached");
    }
    // A long preamble before the first delimiter (which the multipart reader would search again and again).
    let mut preambled = vec![b'p'; 200 * 1024];
    preambled.extend_from_slice(b"\r\n");
    preambled.extend_from_slice(&whole);
    let answer = super::rest::raw_request(
        &app,
        &head(&format!("content-length: {}\r\n", preambled.len())),
        &preambled,
        false,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 4") && answer.contains("\"code\""),
        "preamble: {answer}"
    );
    assert_eq!(
        file_of_svc().await,
        Value::Null,
        "preamble: nothing attached"
    );
    // The same request, whole, attaches the file.
    let answer = super::rest::raw_request(
        &app,
        &head(&format!("content-length: {}\r\n", whole.len())),
        &whole,
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        file_of_svc().await["sha256"],
        crate::common::sha256_hex(&data)
    );
}

/// The OCI routes (`/v2/`), with no token, a read token and a write token, sent as registries' clients send them
/// (Bearer, or Basic with the token as password): reads and writes are allowed or refused as everywhere else; a
/// refusal without a token challenges the client to fetch a bearer token from the realm.
pub async fn oci_routes_are_authorized_like_rest(start: Starter) {
    use base64::Engine;
    for public_reads in [false, true] {
        let app = start(options(public_reads)).await;
        let (status, _) = app
            .gql_as(
                Some(WRITE),
                r#"mutation { createService(input: {id: "guarded"}) { id } }"#,
            )
            .await;
        assert_eq!(status, 200);
        let requests: [(&str, &str, Need); 7] = [
            ("GET", "/v2/", Need::Read),
            ("GET", "/v2/_catalog", Need::Read),
            ("GET", "/v2/services/guarded/tags/list", Need::Read),
            ("HEAD", "/v2/services/guarded/manifests/latest", Need::Read),
            (
                "GET",
                "/v2/services/guarded/referrers/sha256:0000000000000000000000000000000000000000000000000000000000000000",
                Need::Read,
            ),
            ("POST", "/v2/services/guarded/blobs/uploads/", Need::Write),
            ("PUT", "/v2/services/guarded/manifests/latest", Need::Write),
        ];
        for token in [None, Some(READ), Some(WRITE)] {
            for basic in [false, true] {
                if basic && token.is_none() {
                    continue;
                }
                for (method, path, need) in requests {
                    let mut request = app.client.request(method.parse().unwrap(), app.url(path));
                    if let Some(token) = token {
                        request = if basic {
                            let credentials = base64::engine::general_purpose::STANDARD
                                .encode(format!("ci:{token}"));
                            request.header("authorization", format!("Basic {credentials}"))
                        } else {
                            request.bearer_auth(token)
                        };
                    }
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    let what = format!(
                        "{method} {path} with {token:?} (basic: {basic}, public reads: {public_reads})"
                    );
                    match refusal(public_reads, token, need) {
                        Some((_, 401)) => {
                            assert_eq!(status, 401, "{what}");
                            let challenge = response.headers()["www-authenticate"]
                                .to_str()
                                .unwrap()
                                .to_string();
                            assert!(
                                challenge.starts_with(&format!(
                                    "Bearer realm=\"http://{}/v2/token\"",
                                    app.addr
                                )),
                                "{what}: {challenge}"
                            );
                        }
                        Some((_, 403)) => assert_eq!(status, 403, "{what}"),
                        Some(other) => panic!("{what}: unexpected refusal {other:?}"),
                        None => assert!(!matches!(status, 401 | 403), "{what}: {status}"),
                    }
                    if method != "HEAD" && matches!(status, 401 | 403) {
                        let body: Value = response.json().await.unwrap();
                        let code = body["errors"][0]["code"].as_str().unwrap_or_default();
                        let expected = if status == 401 {
                            "UNAUTHORIZED"
                        } else {
                            "DENIED"
                        };
                        assert_eq!(code, expected, "{what}: {body}");
                    }
                }
            }
        }
        // The realm trades Basic credentials for a bearer token, and refuses bad ones.
        for (password, ok) in [(READ, true), (WRITE, true), ("forged", false)] {
            let response = app
                .client
                .get(app.url("/v2/token?service=x&scope=repository:services/guarded:pull"))
                .basic_auth("ci", Some(password))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status().as_u16(),
                if ok { 200 } else { 401 },
                "{password}"
            );
            if ok {
                let body: Value = response.json().await.unwrap();
                let bearer = body["token"].as_str().unwrap();
                let base = app
                    .client
                    .get(app.url("/v2/"))
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(base.status(), 200, "the realm's token opens /v2/");
            }
        }
    }
}
