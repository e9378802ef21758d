//! Clients that hold connections without doing their part: a download nobody reads, request headers that never
//! end, more connections than the server serves. Over a real port, with tiny limits so the tests stay short.

mod common;

use std::time::Duration;

use common::slow::SlowDownload;
use common::{TestApp, bytes, config_with, eventually, test_config, tokens};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn upload_service_file(app: &TestApp, data: Vec<u8>) {
    app.create_service("svc").await;
    let response = app
        .upload(
            "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
            json!({}),
            data,
            "f.zip",
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.unwrap()["errors"].is_null());
}

#[tokio::test]
async fn a_download_whose_client_stops_reading_is_ended() {
    let app = common::embedded(config_with(|c| {
        c.connections.send_idle_timeout = Duration::from_secs(1)
    }))
    .await;
    let data = bytes(16 << 20, 1);
    upload_service_file(&app, data.clone()).await;

    let mut download = SlowDownload::start(app.addr, "/service/svc", &[]).await;
    assert_eq!(download.status, 200);
    download.read_at_least(64 * 1024).await;
    // The client now reads nothing: the server resets the connection once its send idle timeout has passed.
    let reset = eventually(Duration::from_secs(30), async || {
        download.stream().take_error().ok().flatten().is_some()
    })
    .await;
    assert!(reset, "the stalled download was not ended");
    let received = download.until_closed(Duration::from_secs(30)).await;
    assert!(
        received.is_some_and(|n| n < data.len()),
        "the connection is closed before the whole file: {received:?}"
    );

    // The server serves the same file to a client that reads.
    let body = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(body.len(), data.len());
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed() {
    let app = common::embedded(config_with(|c| {
        c.connections.header_read_timeout = Duration::from_secs(1)
    }))
    .await;
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    for stream in [&mut idle, &mut partial] {
        let mut buffer = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408, say
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server kept the connection open");
    }
    // A client that sends its request in time is served.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// Sends a request for `/healthz` on a kept-alive connection and reads its answer.
async fn healthz_on(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\"ok\"") {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn connections_over_the_limit_get_a_503_but_healthz_answers() {
    let app = common::embedded(config_with(|c| c.connections.max_connections = Some(4))).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        healthz_on(&mut stream).await;
        held.push(stream);
    }

    // A fresh client per request, so that no pooled connection is reused.
    let response = reqwest::Client::new()
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["content-type"], "application/json");
    // Answered outside the router, with the same security headers as every other answer.
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("connection limit"),
        "{body}"
    );
    let response = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "liveness probes still answer");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    // The held connections are still served, and a closed one frees its place.
    healthz_on(&mut held[0]).await;
    drop(held.pop());
    let served = eventually(Duration::from_secs(30), async || {
        let response = reqwest::Client::new()
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap();
        response.status() == 200
    })
    .await;
    assert!(served, "a freed place is given to the next client");
}

#[tokio::test]
async fn a_download_cut_mid_body_resumes_with_range_to_the_same_bytes() {
    let app = common::embedded(test_config()).await;
    let data = bytes(1024 * 1024, 7);
    upload_service_file(&app, data.clone()).await;
    let proxy = common::chaos::ChaosProxy::start(app.addr).await;
    proxy.set(common::chaos::Fault::CutAfter(300_000));

    let client = reqwest::Client::new();
    let url = format!("{}/service/svc", proxy.url());
    let mut response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let cut = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the proxy cuts the body short");
    assert!(!received.is_empty() && received.len() < data.len());

    proxy.set(common::chaos::Fault::None);
    let rest = client
        .get(&url)
        .header("range", format!("bytes={}-", received.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 206);
    received.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(common::sha256_hex(&received), common::sha256_hex(&data));
}

/// Connections are served on connection threads (by default one per core) or, with 0, on the shared runtime:
/// either way concurrent downloads arrive whole, and a stopped server leaves its store to the next one.
#[tokio::test]
async fn downloads_arrive_whole_on_connection_threads_or_the_shared_runtime() {
    for threads in [0, 1, 3] {
        let app = common::embedded(config_with(|c| {
            c.connections.connection_threads = Some(threads)
        }))
        .await;
        let data = bytes(3 << 20, threads as u64);
        upload_service_file(&app, data.clone()).await;
        let downloads =
            (0..6).map(|_| async { app.get("/service/svc").await.bytes().await.unwrap() });
        for body in futures_util::future::join_all(downloads).await {
            assert!(
                body == data,
                "{threads} thread(s): a download differs from the upload"
            );
        }
        let dir = app.stop_keeping_data().await;
        let again = common::embedded_in(dir.path()).await;
        let body = again.get("/service/svc").await.bytes().await.unwrap();
        assert!(
            body == data,
            "{threads} thread(s): the reopened store serves other bytes"
        );
        again.stop().await;
    }
}

/// A request refused before its body is read: the server discards the rest of the body while the connection
/// closes (lingering, as nginx does), so the client still sending it reads the refusal and a clean close instead of
/// a reset that could destroy the answer.
#[tokio::test]
async fn a_refused_upload_s_rest_is_discarded_so_its_client_reads_the_refusal() {
    let app = common::embedded(config_with(|c| c.auth = tokens(&["r"], &["w"], false))).await;
    let chunk = vec![b' '; 64 * 1024];
    let chunks = 128; // 8 MiB: far more than the socket buffers hold
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        chunk.len() * chunks
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&chunk).await.unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer's head");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    for sent in 1..chunks {
        if let Err(e) = stream.write_all(&chunk).await {
            panic!("the server reset the connection after {sent} of {chunks} chunks: {e}");
        }
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "not a clean close: {closed:?}");
}
