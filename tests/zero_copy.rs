//! Zero-copy downloads: the embedded store's page-cached files go out by sendfile(2) (counted by
//! `repository_download_sendfile_bytes_total` in `/metrics`), and every answer a client relies on stays as it was:
//! the exact bytes of whole files and ranges, HEAD, 304, and a stalled client cut off without holding memory.
//! Over a real port; files span several mappings (16 MiB each) and start and end off a page.

mod common;

use std::ops::Range;
use std::time::Duration;

use common::slow::SlowDownload;
use common::{TestApp, bytes, config_with, eventually, test_config};

const MIB: usize = 1024 * 1024;

/// Bytes sent by sendfile so far (of the process: tests running beside this one may add theirs).
async fn sendfile_bytes(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with("repository_download_sendfile_bytes_total "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("the counter is exported: {text}"))
}

/// The file-backed memory resident in this process's mappings (the server runs in it).
fn mapped_file_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("RssFile:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssFile in /proc/self/status");
    kib * 1024
}

#[tokio::test]
async fn whole_files_and_ranges_in_parallel_are_the_stored_bytes_sent_by_sendfile() {
    let app = common::embedded(test_config()).await;
    let data = bytes(40 * MIB + 12_345, 3);
    app.create_service("svc").await;
    app.upload_service_file("svc", data.clone()).await;
    let len = data.len();
    let before = sendfile_bytes(&app).await;

    let requests: Vec<(Option<String>, Range<usize>)> = vec![
        (None, 0..len),
        (None, 0..len),
        (Some("bytes=0-".into()), 0..len),
        (Some("bytes=1000-5000000".into()), 1000..5_000_001),
        // A suffix range: the last three MiB and a bit, starting off a page.
        (Some("bytes=-3150001".into()), len - 3_150_001..len),
        // Across the boundary of two mappings.
        (
            Some(format!("bytes={}-{}", 16 * MIB - 7, 32 * MIB + 9)),
            16 * MIB - 7..32 * MIB + 10,
        ),
        // Small enough to be copied, as before.
        (Some("bytes=100-99999".into()), 100..100_000),
        (Some(format!("bytes={}-", len - 1)), len - 1..len),
    ];
    let downloads = requests.iter().map(|(range, _)| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = range.iter().map(|r| ("range", r.as_str())).collect();
            let response = app.get_with("/service/svc", &headers).await;
            let status = response.status().as_u16();
            let content_range = response
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, content_range, response.bytes().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(downloads).await;
    for ((range, expected), (status, content_range, body)) in requests.iter().zip(answers) {
        assert!(
            body[..] == data[expected.clone()],
            "{range:?}: {} bytes, not the stored bytes {expected:?}",
            body.len()
        );
        match range {
            Some(_) => {
                assert_eq!(status, 206, "{range:?}");
                assert_eq!(
                    content_range.as_deref(),
                    Some(format!("bytes {}-{}/{len}", expected.start, expected.end - 1).as_str())
                );
            }
            None => assert_eq!(status, 200),
        }
    }

    // Every stretch of a read chunk (128 KiB) or more was sent from the file; only the small ones were copied.
    let large: usize = requests
        .iter()
        .map(|(_, r)| r.len())
        .filter(|&n| n >= 128 * 1024)
        .map(|n| n - 128 * 1024)
        .sum();
    let sent = sendfile_bytes(&app).await - before;
    assert!(
        sent >= large as u64,
        "sendfile sent {sent} bytes, not the {large} of the large downloads"
    );
}

/// While a file goes out by sendfile the socket is corked (only full segments leave), and the cork is lifted once
/// the response is written: a file's last bytes leave at once, not at the kernel's 200 ms ceiling. Thirty
/// keep-alive downloads of a file that ends mid-segment would take six seconds otherwise; and so would thirty
/// ranges that end mid-file, which the cork, held between the stretches of one stream, must not outlast.
#[tokio::test]
async fn a_sent_file_s_last_bytes_leave_at_once() {
    let app = common::embedded(test_config()).await;
    let data = bytes(128 * 1024 + 1_001, 9);
    app.create_service("svc").await;
    app.upload_service_file("svc", data.clone()).await;
    let before = sendfile_bytes(&app).await;

    let started = std::time::Instant::now();
    for _ in 0..30 {
        assert_eq!(app.get("/service/svc").await.bytes().await.unwrap(), data);
    }
    let took = started.elapsed();
    let sent = sendfile_bytes(&app).await - before;
    assert!(
        sent >= 30 * data.len() as u64,
        "sendfile sent only {sent} bytes"
    );
    assert!(took < Duration::from_secs(3), "30 downloads took {took:?}");

    let large = bytes(MIB + 5_000, 10);
    app.create_service("large").await;
    app.upload_service_file("large", large.clone()).await;
    let (start, end) = (1_000, 1_000 + 300_001);
    let range = format!("bytes={start}-{}", end - 1);
    let before = sendfile_bytes(&app).await;
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let response = app.get_with("/service/large", &[("range", &range)]).await;
        assert_eq!(response.status(), 206);
        assert!(response.bytes().await.unwrap() == large[start..end]);
    }
    let took = started.elapsed();
    let sent = sendfile_bytes(&app).await - before;
    assert!(
        sent >= 30 * (end - start) as u64,
        "sendfile sent only {sent} bytes"
    );
    assert!(took < Duration::from_secs(3), "30 ranges took {took:?}");
}

/// A send cut short by a full socket buffer waits for the kernel's next "writable" before it goes on (fewer and
/// larger sendfile calls): clients on slow links, whose buffers fill again and again, still get every byte, and
/// promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_whose_socket_fills_again_and_again_get_every_byte() {
    let app = common::embedded(test_config()).await;
    let data = bytes(40 * MIB + 777, 5);
    app.create_service("svc").await;
    app.upload_service_file("svc", data.clone()).await;
    let before = sendfile_bytes(&app).await;

    let started = std::time::Instant::now();
    let downloads = (0..4).map(|_| async {
        let download = SlowDownload::start(app.addr, "/service/svc", &[]).await;
        assert_eq!(download.status, 200);
        download.finish().await
    });
    for body in futures_util::future::join_all(downloads).await {
        assert!(body == data, "a download got other bytes than the file's");
    }
    assert!(
        sendfile_bytes(&app).await - before >= 4 * 40 * MIB as u64,
        "the downloads went by sendfile"
    );
    // A lost wake-up would leave a download waiting for the send idle timeout (60 s).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "4 x 40 MiB over loopback took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn head_304_and_range_answers_keep_their_headers_on_the_sendfile_path() {
    let app = common::embedded(test_config()).await;
    let data = bytes(6 * MIB + 1, 5);
    app.create_service("svc").await;
    let sha = app.upload_service_file("svc", data.clone()).await;
    let etag = format!("\"{sha}\"");

    let get = app.get("/service/svc").await;
    assert_eq!(get.status(), 200);
    let headers = get.headers().clone();
    assert_eq!(get.bytes().await.unwrap(), data);
    assert_eq!(headers["content-length"], data.len().to_string().as_str());
    assert_eq!(headers["etag"], etag.as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("f.zip")
    );
    assert!(headers.contains_key("last-modified"));

    let head = app
        .client
        .head(app.url("/service/svc"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    for name in [
        "content-length",
        "etag",
        "accept-ranges",
        "content-type",
        "content-disposition",
        "last-modified",
    ] {
        assert_eq!(head.headers().get(name), headers.get(name), "HEAD's {name}");
    }
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD sends no body");

    let ranged_head = app
        .client
        .head(app.url("/service/svc"))
        .header("range", "bytes=-1000000")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged_head.status(), 206);
    assert_eq!(ranged_head.headers()["content-length"], "1000000");
    let last = data.len() - 1;
    assert_eq!(
        ranged_head.headers()["content-range"],
        format!("bytes {}-{last}/{}", data.len() - 1_000_000, data.len()).as_str()
    );

    let cached = app
        .get_with("/service/svc", &[("if-none-match", etag.as_str())])
        .await;
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.bytes().await.unwrap().is_empty());

    // A stale If-Range: the whole file, from the file.
    let stale = app
        .get_with(
            "/service/svc",
            &[("range", "bytes=0-99"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap(), data);

    let beyond = app
        .get_with("/service/svc", &[("range", "bytes=99999999-")])
        .await;
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );
}

#[tokio::test]
async fn stalled_downloads_on_the_sendfile_path_are_cut_off_and_fault_no_file_into_memory() {
    const STALLED: usize = 20;
    let app = common::embedded(config_with(|c| {
        c.connections.send_idle_timeout = Duration::from_secs(1)
    }))
    .await;
    let data = bytes(40 * MIB, 9);
    app.create_service("svc").await;
    app.upload_service_file("svc", data.clone()).await;
    let resident_before = mapped_file_resident_bytes();
    let sent_before = sendfile_bytes(&app).await;

    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut download = SlowDownload::start(app.addr, "/service/svc", &[]).await;
        assert_eq!(download.status, 200);
        download.read_at_least(64 * 1024).await;
        stalled.push(download);
    }
    // The clients now read nothing. What they got came from the file, by sendfile.
    let sent = sendfile_bytes(&app).await - sent_before;
    assert!(
        sent >= (STALLED * 64 * 1024) as u64,
        "sendfile sent {sent} bytes to the stalled clients"
    );
    // Each holds up to three 16 MiB mappings of the file (960 MiB of address space in all), and nothing of them is
    // read in userspace: no page of the file becomes resident in this process. (A copy from the mappings faults in
    // tens of MiB here: every byte sent, and the kernel's read-around.)
    let resident = mapped_file_resident_bytes().saturating_sub(resident_before);
    assert!(
        resident < 4 * MIB as u64,
        "{resident} bytes of mapped files became resident while {sent} bytes were sent"
    );

    for download in &stalled {
        let reset = eventually(Duration::from_secs(30), async || {
            download.stream().take_error().ok().flatten().is_some()
        })
        .await;
        assert!(reset, "a stalled download was not ended");
    }
    for download in stalled {
        let received = download.until_closed(Duration::from_secs(30)).await;
        assert!(
            received.is_some_and(|n| n < data.len()),
            "the connection is closed before the whole file: {received:?}"
        );
    }
    // The same file, whole, to a client that reads.
    let (status, body) = app.download("/service/svc").await;
    assert_eq!(status, 200);
    assert!(body == data, "the whole file after the stalled ones");
}

/// Drops every file of the store's blobs from the page cache (as memory pressure would), after writing back
/// whatever is dirty.
fn evict_blobs(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            evict_blobs(&path);
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("advice taken");
    }
}

#[tokio::test]
async fn a_file_dropped_from_the_page_cache_mid_download_still_arrives_whole() {
    let app = common::embedded(test_config()).await;
    let data = bytes(40 * MIB + 4_321, 13);
    app.create_service("svc").await;
    app.upload_service_file("svc", data.clone()).await;
    let len = data.len();
    let range = format!("bytes={}-", 16 * MIB - 3);
    let mut whole = SlowDownload::start(app.addr, "/service/svc", &[]).await;
    let mut ranged = SlowDownload::start(app.addr, "/service/svc", &[("range", &range)]).await;
    assert_eq!((whole.status, ranged.status), (200, 206));
    whole.read_at_least(MIB).await;
    ranged.read_at_least(MIB).await;
    // Mid-download, the cache lets the file go: what is mapped already is read back from the disk, the rest of
    // it is read the ordinary way.
    evict_blobs(app.data_dir.as_deref().unwrap());
    let (whole, ranged) = (whole.finish().await, ranged.finish().await);
    assert!(whole == data, "the whole file, byte for byte");
    assert!(
        ranged[..] == data[16 * MIB - 3..len],
        "the range, byte for byte"
    );
    // And again from a cold cache.
    evict_blobs(app.data_dir.as_deref().unwrap());
    let (status, body) = app.download("/service/svc").await;
    assert_eq!(status, 200);
    assert!(body == data, "the whole file from a cold cache");
}

#[tokio::test]
async fn ranges_that_start_or_end_on_a_mapping_or_read_chunk_boundary_are_exact() {
    // A file of exactly two mappings: the edges where one stretch ends and the next begins, and stretches of
    // exactly one read chunk (mapped) and one byte less (copied).
    let app = common::embedded(test_config()).await;
    let data = bytes(32 * MIB, 17);
    app.create_service("svc").await;
    app.upload_service_file("svc", data.clone()).await;
    let len = data.len();
    let chunk = 128 * 1024;
    let cases: Vec<(String, Range<usize>)> = vec![
        (format!("bytes={}-", 16 * MIB), 16 * MIB..len),
        (format!("bytes=0-{}", 16 * MIB - 1), 0..16 * MIB),
        (
            format!("bytes={}-{}", 16 * MIB - 1, 16 * MIB),
            16 * MIB - 1..16 * MIB + 1,
        ),
        (format!("bytes=-{chunk}"), len - chunk..len),
        (format!("bytes=-{}", chunk - 1), len - chunk + 1..len),
        (
            format!("bytes={}-{}", 16 * MIB - chunk, 16 * MIB + chunk - 1),
            16 * MIB - chunk..16 * MIB + chunk,
        ),
        (format!("bytes={}-{}", len - 1, len + 100), len - 1..len),
    ];
    for (range, expected) in cases {
        let response = app
            .get_with("/service/svc", &[("range", range.as_str())])
            .await;
        assert_eq!(response.status(), 206, "{range}");
        let content_range = response.headers()["content-range"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            content_range,
            format!("bytes {}-{}/{len}", expected.start, expected.end - 1),
            "{range}"
        );
        let body = response.bytes().await.unwrap();
        assert!(
            body[..] == data[expected.clone()],
            "{range}: {} bytes, not {expected:?}",
            body.len()
        );
    }
    let response = app
        .get_with("/service/svc", &[("range", &format!("bytes={len}-"))])
        .await;
    assert_eq!(response.status(), 416, "a range starting at the end");
}
