//! The original service's REST API, driven the way its scripts and inference servers drive it.

use serde_json::{Value, json};

use super::Starter;
use crate::common::{TestApp, bytes, config_with, sha256_hex, test_config};

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn file_form(data: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data).file_name("component.zip"),
    )
}

pub async fn original_rest_api_round_trip(start: Starter) {
    let app: TestApp = start(test_config()).await;
    let c = &app.client;

    // Models: create, upload, meta, update meta, list, download, delete.
    let model = json!({"model_name": "fall-detection", "model_version": "pilot-2-1",
                       "meta": {"library": "keras", "description": "A CNN"}});
    let (status, created) = send(c.post(app.url("/model")).json(&model)).await;
    assert_eq!(status, 201);
    assert_eq!(created["model_id"], Value::Null, "no file yet");
    let data = bytes(300_000, 11);
    let (status, _) = send(
        c.put(app.url("/model/fall-detection/pilot-2-1"))
            .multipart(file_form(data.clone())),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = send(
        c.put(app.url("/model/meta/fall-detection/pilot-2-1"))
            .json(&json!({"library": "tensorflow", "description": "retrained"})),
    )
    .await;
    assert_eq!(status, 204);
    let (_, meta) =
        send(c.get(app.url("/model/meta?model_name=fall-detection&model_version=pilot-2-1"))).await;
    assert_eq!(
        meta["meta"],
        json!({"library": "tensorflow", "description": "retrained"})
    );
    assert!(
        meta["model_id"].is_string(),
        "the file is referenced: {meta}"
    );
    let head = c
        .head(app.url("/model/fall-detection/pilot-2-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200, "HEAD on downloads");
    assert_eq!(head.headers()["content-length"], "300000");
    assert!(head.headers().contains_key("etag"));
    assert!(head.bytes().await.unwrap().is_empty());
    let download = c
        .get(app.url("/model/fall-detection/pilot-2-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sha256_hex(&download.bytes().await.unwrap()),
        sha256_hex(&data)
    );

    // The three id-keyed kinds.
    let transformation = json!({"id": "custom.img_transpose", "description": "transpose",
        "parameter_types": {"axes": "list"}, "default_values": {"axes": [1, 0, 2]}, "outputs": ["image"],
        "needs": {"storage": 1.0, "RAM": 0.5, "GPU": false, "preinstalled_libraries": {"numpy": "1.26.4"},
                  "available_models": null}});
    let service = json!({"id": "inference_application.code.services.extended_inference_svc",
        "description": "gRPC", "needs": {"RAM": 1, "GPU": true, "preinstalled_libraries": null,
        "available_models": {"fall-detection": "pilot-2-1"}}});
    let inferencer = json!({"id": "tf.inferencer", "description": "TF", "library": "tensorflow",
        "use_cuda": true, "needs": {"GPU": true}});
    for (kind, body) in [
        ("transformation", &transformation),
        ("service", &service),
        ("inferencer", &inferencer),
    ] {
        let id = body["id"].as_str().unwrap();
        let (status, created) = send(c.post(app.url(&format!("/{kind}"))).json(body)).await;
        assert_eq!(status, 201, "{kind}: {created}");
        assert_eq!(created["id"], id);
        assert_eq!(created["storage_id"], Value::Null);
        let (status, _) = send(
            c.put(app.url(&format!("/{kind}/{id}")))
                .multipart(file_form(bytes(5_000, 12))),
        )
        .await;
        assert_eq!(status, 204, "{kind} upload");
        let mut changed = body.clone();
        changed["description"] = json!("changed");
        let (status, _) = send(c.put(app.url(&format!("/{kind}/meta/{id}"))).json(&changed)).await;
        assert_eq!(status, 204, "{kind} meta");
        let (status, list) = send(c.get(app.url(&format!("/{kind}")))).await;
        assert_eq!(status, 200);
        let listed = &list.as_array().unwrap()[0];
        assert_eq!(listed["description"], "changed");
        assert!(listed["storage_id"].is_string());
        let download = c
            .get(app.url(&format!("/{kind}/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(download.status(), 200);
        assert_eq!(
            download.bytes().await.unwrap().as_ref(),
            bytes(5_000, 12).as_slice()
        );
    }
    let (_, services) = send(c.get(app.url("/service"))).await;
    assert_eq!(services[0]["needs"]["RAM"], 1.0);
    assert_eq!(
        services[0]["needs"]["available_models"]["fall-detection"],
        "pilot-2-1"
    );
    let (_, transformations) = send(c.get(app.url("/transformation"))).await;
    assert_eq!(
        transformations[0]["default_values"]["axes"],
        json!([1, 0, 2])
    );

    // And GraphQL sees what REST wrote.
    let data = app
        .ok(
            "{ inferencer(id: \"tf.inferencer\") { library useCuda needs { gpu } file { size } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["inferencer"],
        json!({"library": "tensorflow", "useCuda": true,
        "needs": {"gpu": true}, "file": {"size": 5000}})
    );

    for path in [
        "/model/fall-detection/pilot-2-1",
        "/transformation/custom.img_transpose",
        "/service/inference_application.code.services.extended_inference_svc",
        "/inferencer/tf.inferencer",
    ] {
        let (status, _) = send(c.delete(app.url(path))).await;
        assert_eq!(status, 204, "{path}");
        let (status, body) = send(c.get(app.url(path))).await;
        assert_eq!(status, 404);
        assert!(body["detail"].is_string());
    }
    let (_, models) = send(c.get(app.url("/model"))).await;
    assert_eq!(models, json!([]));
}

pub async fn original_rest_api_errors(start: Starter) {
    let app: TestApp = start(test_config()).await;
    let c = &app.client;
    let service = json!({"id": "svc", "description": "", "needs": {}});
    send(c.post(app.url("/service")).json(&service)).await;

    // (A model: nx-27017, the wire server of CI, does not enforce the unique index of ids.)
    let model = json!({"model_name": "m", "model_version": "1", "meta": {}});
    send(c.post(app.url("/model")).json(&model)).await;
    let (status, body) = send(c.post(app.url("/model")).json(&model)).await;
    assert_eq!(
        status, 400,
        "a duplicate is a 400, as in the original: {body}"
    );
    assert!(body["detail"].is_string());
    let (status, body) = send(
        c.post(app.url("/service"))
            .body("{not json")
            .header("content-type", "application/json"),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body["detail"].is_array(), "FastAPI's detail list: {body}");
    let (status, _) = send(c.post(app.url("/model")).json(&json!({"model_name": "m"}))).await;
    assert_eq!(status, 422, "model_version is required");
    let (status, body) = send(c.post(app.url("/service")).json(&json!({"id": "../x"}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{body}"
    );

    // The meta route uses the path id; a body id that disagrees is refused.
    let (status, body) = send(
        c.put(app.url("/service/meta/svc"))
            .json(&json!({"id": "other", "description": "x"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = send(
        c.put(app.url("/service/meta/svc"))
            .json(&json!({"description": "x"})),
    )
    .await;
    assert_eq!(status, 204, "the path names the component");

    let (status, body) = send(
        c.put(app.url("/service/missing"))
            .multipart(file_form(vec![1, 2, 3])),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = send(
        c.put(app.url("/model/meta/no/such"))
            .json(&json!({"library": "x"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(c.delete(app.url("/inferencer/missing"))).await;
    assert_eq!(status, 404);
    let form = reqwest::multipart::Form::new().text("other", "no file here");
    let (status, _) = send(c.put(app.url("/service/svc")).multipart(form)).await;
    assert_eq!(status, 422, "a form without `file`");
    let (_, listed) = send(c.get(app.url("/service"))).await;
    assert_eq!(
        listed[0]["storage_id"],
        Value::Null,
        "no failed request stored a file"
    );
}

/// REST bodies are JSON objects sent as JSON: what a cross-site HTML form can send (`text/plain`, form encodings,
/// no type) is a 415, and an array is not read as a positional object.
pub async fn rest_bodies_must_be_json_objects(start: Starter) {
    let app: TestApp = start(test_config()).await;
    let c = &app.client;
    let model = json!({"model_name": "m", "model_version": "1", "meta": {"library": "keras", "description": "d"}});
    let (status, _) = send(c.post(app.url("/model")).json(&model)).await;
    assert_eq!(status, 201);
    let service = json!({"id": "svc", "description": "kept"});
    for (path, content_type) in [
        ("/service", Some("text/plain")),
        ("/service", Some("application/x-www-form-urlencoded")),
        ("/service", Some("multipart/form-data; boundary=x")),
        ("/service", None),
        ("/model", Some("text/plain")),
    ] {
        let mut request = c.post(app.url(path)).body(service.to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, body) = send(request).await;
        assert_eq!(status, 415, "{path} {content_type:?}: {body}");
        assert_eq!(body["code"], "UNSUPPORTED_MEDIA_TYPE", "{body}");
    }
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let (status, body) = send(
            c.post(app.url("/service"))
                .header("content-type", content_type)
                .body(service.to_string()),
        )
        .await;
        assert_eq!(status, 201, "{content_type}: {body}");
        send(c.delete(app.url("/service/svc"))).await;
    }
    let (status, _) = send(c.post(app.url("/service")).json(&service)).await;
    assert_eq!(status, 201);

    // Arrays are refused everywhere, and change nothing.
    for (method, path, body) in [
        ("POST", "/service", json!(["svc2", "x"])),
        ("POST", "/model", json!(["m", "2", {}])),
        ("PUT", "/model/meta/m/1", json!([])),
        ("PUT", "/service/meta/svc", json!([])),
    ] {
        let request = c
            .request(method.parse().unwrap(), app.url(path))
            .json(&body);
        let (status, answer) = send(request).await;
        assert_eq!(status, 422, "{method} {path}: {answer}");
        assert_eq!(answer["code"], "INVALID_INPUT", "{answer}");
    }
    let (_, meta) = send(c.get(app.url("/model/meta?model_name=m&model_version=1"))).await;
    assert_eq!(
        meta["meta"],
        json!({"library": "keras", "description": "d"})
    );
    let (_, services) = send(c.get(app.url("/service"))).await;
    assert_eq!(services.as_array().unwrap().len(), 1, "{services}");
    assert_eq!(services[0]["description"], "kept");
    // Meta updates want JSON too.
    let (status, _) = send(
        c.put(app.url("/model/meta/m/1"))
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 415);
}

/// Writes `head` and `body` on a fresh connection (closing its sending side if `close`) and returns what the server
/// answered: possibly nothing, when it closes the connection instead.
/// `body` as one chunk of a chunked body, without the last chunk that would end it.
pub(super) fn one_chunk(body: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", body.len()).into_bytes();
    chunk.extend_from_slice(body);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// A multipart body complete to its closing delimiter, in HTTP framing that never ends: short of its
/// `Content-Length`, or chunked without its last chunk; each with the client waiting, then going away. `head` makes
/// the request head for a framing header. Cases: (why, head, body, whether the client closes).
pub(super) fn cut_off_framings(
    head: impl Fn(&str) -> String,
    whole: &[u8],
) -> Vec<(&'static str, String, Vec<u8>, bool)> {
    let short = head(&format!("content-length: {}\r\n", whole.len() + 100));
    let chunked = head("transfer-encoding: chunked\r\n");
    vec![
        (
            "a complete multipart short of its content-length",
            short.clone(),
            whole.to_vec(),
            false,
        ),
        (
            "a complete multipart short of its content-length, then closed",
            short,
            whole.to_vec(),
            true,
        ),
        (
            "a complete multipart without the last chunk",
            chunked.clone(),
            one_chunk(whole),
            false,
        ),
        (
            "a complete multipart without the last chunk, then closed",
            chunked,
            one_chunk(whole),
            true,
        ),
    ]
}

pub(super) async fn raw_request(app: &TestApp, head: &str, body: &[u8], close: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    if close {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A REST upload whose body breaks off after a complete `file` part is refused, and nothing is stored: the declared
/// length is not reached, the closing delimiter is missing, or a chunked body lacks its last chunk.
pub async fn truncated_rest_uploads_are_refused(start: Starter) {
    let app: TestApp = start(config_with(|c| {
        c.limits.body_idle_timeout = std::time::Duration::from_secs(1);
    }))
    .await;
    let (status, _) = send(
        app.client
            .post(app.url("/service"))
            .json(&json!({"id": "svc"})),
    )
    .await;
    assert_eq!(status, 201);
    let boundary = "XyZ";
    let data = bytes(20_000, 9);
    let mut part = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\
         Content-Type: application/zip\r\n\r\n"
    )
    .into_bytes();
    part.extend_from_slice(&data);
    part.extend_from_slice(format!("\r\n--{boundary}").as_bytes());
    let head = |framing: &str| {
        format!(
            "PUT /service/svc HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             content-type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n"
        )
    };
    let chunk = one_chunk(&part);
    // A multipart body complete to its closing delimiter: the HTTP body around it must be complete too.
    let mut whole = part.clone();
    whole.extend_from_slice(b"--\r\n");
    let mut cases = cut_off_framings(head, &whole);
    cases.extend([
        // The declared length is never reached (the client stalls, or goes away).
        (
            "short of its content-length",
            head(&format!("content-length: {}\r\n", part.len() + 100)),
            part.clone(),
            false,
        ),
        (
            "short of its content-length, then closed",
            head(&format!("content-length: {}\r\n", part.len() + 100)),
            part.clone(),
            true,
        ),
        // The whole declared length arrives, but the closing `--` never does.
        (
            "without its closing delimiter",
            head(&format!("content-length: {}\r\n", part.len())),
            part.clone(),
            false,
        ),
        // One chunk with everything, and no last chunk.
        (
            "without the last chunk",
            head("transfer-encoding: chunked\r\n"),
            chunk.clone(),
            false,
        ),
        (
            "without the last chunk, then closed",
            head("transfer-encoding: chunked\r\n"),
            chunk,
            true,
        ),
    ]);
    for (why, head, body, close) in cases {
        let answer = raw_request(&app, &head, &body, close).await;
        let status = answer.get(9..12).unwrap_or_default();
        if close {
            // The server may answer or just close the connection of a client that left.
            assert!(
                answer.is_empty() || status.starts_with('4'),
                "{why}: {answer}"
            );
        } else {
            assert!(
                status.starts_with('4') && answer.contains("\"code\""),
                "{why}: {answer}"
            );
        }
        let (_, services) = send(app.client.get(app.url("/service"))).await;
        assert_eq!(
            services[0]["storage_id"],
            Value::Null,
            "{why}: nothing stored"
        );
        assert_eq!(app.get("/service/svc").await.status(), 404, "{why}");
    }

    // The same bytes, complete, are stored: with a content-length, and chunked with its last chunk.
    let answer = raw_request(
        &app,
        &head(&format!("content-length: {}\r\n", whole.len())),
        &whole,
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let downloaded = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&data));
    let (status, _) = send(app.client.delete(app.url("/service/svc"))).await;
    assert_eq!(status, 204);
    let (status, _) = send(
        app.client
            .post(app.url("/service"))
            .json(&json!({"id": "svc"})),
    )
    .await;
    assert_eq!(status, 201);
    let mut chunked = one_chunk(&whole);
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_request(
        &app,
        &head("transfer-encoding: chunked\r\n"),
        &chunked,
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let downloaded = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&data));
}
