//! Pushes one file through the HTTP API and prints what it costs.
//!
//! ```sh
//! cargo build --release --bins --examples && target/release/examples/bench 1GiB [-- extra server flags]
//! ```
//!
//! Prints upload and download MB/s, each as a ratio to reading the same file from local disk in the same run, and
//! the server's peak RSS above its idle RSS during each phase (sampled from /proc every 2 ms). Targets: less than
//! 64 MiB above idle whatever the size; download at least half the raw read rate.

use std::io::{Read, Write};
use testkit::process;
#[cfg(not(target_os = "linux"))]
compile_error!("the benchmark reads /proc and uses O_DIRECT: Linux only");
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytesize::ByteSize;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::bench::rss::{RssSampler, rss_bytes};

const CHUNK: usize = 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

/// Writes `size` pseudo-random (incompressible) bytes and returns their sha256.
fn write_input(path: &std::path::Path, size: u64) -> anyhow::Result<String> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buffer = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        for word in buffer.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(CHUNK as u64) as usize;
        file.write_all(&buffer[..n])?;
        hasher.update(&buffer[..n]);
        left -= n as u64;
    }
    file.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

/// Reads the whole file and returns MiB/s: from the disk itself when `direct` (O_DIRECT bypasses the page cache),
/// else through the page cache.
fn disk_read_rate(path: &std::path::Path, direct: bool) -> anyhow::Result<f64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let mut file = options.open(path)?;
    let mut buffer = AlignedBuffer::new(CHUNK);
    let buffer = buffer.as_mut_slice();
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        let n = file.read(buffer)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(total as f64 / MIB / started.elapsed().as_secs_f64())
}

/// O_DIRECT reads need a buffer aligned to the device's block size; 4096 covers every common device.
struct AlignedBuffer {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuffer {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("a valid layout");
        // SAFETY: the layout has a non-zero size; the pointer is checked below and freed in Drop.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Self { ptr, layout }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr points at layout.size() initialised (zeroed) bytes that this struct owns.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Makes the next read of `path` come from the disk: drops the whole page cache when permitted (root), else evicts
/// just this file. Returns how it was done, for the report.
fn make_cold(path: &std::path::Path) -> anyhow::Result<&'static str> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok() {
        return Ok("page cache dropped");
    }
    evict_from_page_cache(path)?;
    Ok("file evicted with posix_fadvise (no root: less reliable)")
}

/// Writes a file's dirty pages out and drops it from the page cache.
fn evict_from_page_cache(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    // SAFETY: a plain syscall on a file descriptor that stays open for the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise failed with {rc}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let size: ByteSize = args
        .next()
        .unwrap_or_else(|| "1GiB".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let server_args: Vec<String> = args.skip_while(|a| a != "--").skip(1).collect();
    let size = size.as_u64();

    let dir = tempfile::tempdir_in(".").context("a scratch directory beside the target")?;
    let input = dir.path().join("input.bin");
    println!("writing a {} test file...", ByteSize::b(size));
    let expected_sha = write_input(&input, size)?;
    // The baseline is what any program gets reading the file cold: buffered reads with the kernel's read-ahead.
    let cold = make_cold(&input)?;
    let disk = disk_read_rate(&input, false)?;
    make_cold(&input)?;
    let direct = disk_read_rate(&input, true)?;

    println!("file size            {}", ByteSize::b(size));
    println!(
        "local disk read      {disk:>9.1} MiB/s  (cold, buffered: {cold}; {direct:.1} MiB/s with O_DIRECT)"
    );
    let explicit_store = server_args.iter().any(|a| a.starts_with("--store"));
    let mut backends = vec![("embedded".to_string(), server_args.clone())];
    // With MONGODB_URI set (and no store chosen by hand), the same figures for the MongoDB backend, in databases
    // of the benchmark's own that are dropped afterwards.
    let mongodb = std::env::var("MONGODB_URI")
        .ok()
        .filter(|uri| !uri.is_empty() && !explicit_store);
    let databases = (
        format!("bench_{}", std::process::id()),
        format!("bench_{}_grid", std::process::id()),
    );
    if mongodb.is_some() {
        let mut flags = server_args.clone();
        flags.extend(
            [
                "--store",
                "mongodb",
                "--mongodb-database",
                &databases.0,
                "--mongodb-grid-database",
                &databases.1,
            ]
            .map(String::from),
        );
        backends.push(("mongodb".to_string(), flags));
    }
    let mut failed = false;
    for (label, flags) in backends {
        let data = dir.path().join(format!("data-{label}"));
        failed |= !bench_backend(&label, &flags, &data, &input, size, &expected_sha, disk).await?;
    }
    if let Some(uri) = mongodb {
        let client = mongodb::Client::with_uri_str(&uri).await?;
        client.database(&databases.0).drop().await?;
        client.database(&databases.1).drop().await?;
    }
    if failed {
        bail!("the downloaded bytes differ from the uploaded ones");
    }
    Ok(())
}

/// Upload, download and list figures of one backend; false when the bytes came back different.
async fn bench_backend(
    label: &str,
    server_args: &[String],
    data_dir: &std::path::Path,
    input: &std::path::Path,
    size: u64,
    expected_sha: &str,
    disk: f64,
) -> anyhow::Result<bool> {
    println!("--- {label} store");
    let mut flags = vec!["--max-upload-size".to_owned(), format!("{}", size + 1)];
    flags.extend(server_args.iter().cloned());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = process::ServerProcess::start(data_dir, &flags);
    let base = server.base.clone();
    let rss = RssSampler::start(server.child.id());
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": "mutation { createModel(input: {name: \"bench\", version: \"1\"}) { name } }" }))
        .send()
        .await?
        .json()
        .await?;
    if created.get("errors").is_some() {
        bail!("creating the model failed: {created}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_bytes(server.child.id()).context("reading the server's RSS")?;

    // Upload.
    rss.reset();
    let file = tokio::fs::File::open(input).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
    let form = testkit::graphql::files_form(
        "mutation($file: Upload!) { uploadModelFile(name: \"bench\", version: \"1\", file: $file) { file { size sha256 } } }",
        json!({}),
        vec![(
            "file".into(),
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                .file_name("bench.bin"),
        )],
    );
    let started = Instant::now();
    let response: Value = testkit::graphql::post_upload(&client, &base, form)
        .send()
        .await?
        .json()
        .await?;
    let upload_secs = started.elapsed().as_secs_f64();
    let upload_peak = rss.peak();
    if response["data"]["uploadModelFile"]["file"]["sha256"] != expected_sha {
        bail!("the server stored other bytes: {response}");
    }

    // Download, cold: the stored blob comes from the disk, as the baseline does.
    let blob = data_dir
        .join("blobs")
        .join(&expected_sha[..2])
        .join(expected_sha);
    if blob.exists() {
        make_cold(&blob)?;
    }
    rss.reset();
    let started = Instant::now();
    let response = client
        .get(format!("{base}/model/bench/1"))
        .send()
        .await?
        .error_for_status()?;
    // The bytes are hashed on a thread of their own as they arrive, so that the client's hashing does not set the
    // pace of the transfer being measured (the disk baseline does not hash either); the channel bounds memory.
    let (chunks, mut to_hash) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        while let Some(chunk) = to_hash.blocking_recv() {
            hasher.update(&chunk);
        }
        hex::encode(hasher.finalize())
    });
    let mut body = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        chunks.send(chunk).await?;
    }
    drop(chunks);
    let download_secs = started.elapsed().as_secs_f64();
    let download_peak = rss.peak();
    let verified = received == size && hashing.await? == expected_sha;

    let mb = size as f64 / MIB;
    let (up, down) = (mb / upload_secs, mb / download_secs);
    let above = |peak: u64| peak.saturating_sub(idle) as f64 / MIB;
    println!(
        "upload (multipart)   {up:>9.1} MiB/s  = {:.2} x disk read   server peak RSS {:.1} MiB above idle",
        up / disk,
        above(upload_peak)
    );
    println!(
        "download (cold)      {down:>9.1} MiB/s  = {:.2} x disk read   server peak RSS {:.1} MiB above idle",
        down / disk,
        above(download_peak)
    );
    println!("server idle RSS      {:.1} MiB", idle as f64 / MIB);
    println!(
        "sha256 verified      {}",
        if verified { "yes" } else { "NO" }
    );
    let rss_ok = above(upload_peak.max(download_peak)) < 64.0;
    let download_ok = down >= disk / 2.0;
    println!(
        "target: peak RSS < 64 MiB above idle         {}",
        if rss_ok { "met" } else { "MISSED" }
    );
    println!(
        "target: download >= 0.5 x disk read          {}",
        if download_ok { "met" } else { "MISSED" }
    );
    list_figures(&client, &base).await?;
    Ok(verified)
}

/// Listing: 1,000 services, then every page of a filtered listing, as a dashboard or orchestrator pages through.
async fn list_figures(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    const COMPONENTS: usize = 1000;
    // Within the server's default alias limit (`--graphql-max-aliases`, 30).
    const PER_REQUEST: usize = 25;
    for batch in 0..COMPONENTS / PER_REQUEST {
        let creates: String = (0..PER_REQUEST)
            .map(|i| {
                let n = batch * PER_REQUEST + i;
                format!(
                    "c{i}: createService(input: {{id: \"bench.svc.{n:05}\", needs: {{ram: {}, gpu: {}, \
                     preinstalledLibraries: [{{name: \"torch\", version: \">=2.{}\"}}]}}}}) {{ id }} ",
                    n % 16,
                    n % 3 == 0,
                    n % 5
                )
            })
            .collect();
        let response: Value = client
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": format!("mutation {{ {creates} }}") }))
            .send()
            .await?
            .json()
            .await?;
        if response.get("errors").is_some() {
            bail!("creating services failed: {response}");
        }
    }
    for (what, filter) in [
        ("list, by needs", "{needs: {maxRam: 8, gpu: false}}"),
        (
            "list, version range",
            "{needs: {libraries: [{name: \"torch\", version: \"2.3\"}]}}",
        ),
    ] {
        let started = Instant::now();
        let (mut after, mut pages, mut seen) = (Value::Null, 0, 0);
        loop {
            let response: Value = client
                .post(format!("{base}/graphql"))
                .json(&json!({
                    "query": format!("query($after: String) {{ services(filter: {filter}, first: 100, after: $after) \
                                      {{ totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ id }} }} }} }}"),
                    "variables": { "after": after },
                }))
                .send()
                .await?
                .json()
                .await?;
            let page = &response["data"]["services"];
            if page.is_null() {
                bail!("listing failed: {response}");
            }
            pages += 1;
            seen += page["edges"].as_array().map_or(0, Vec::len);
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        println!(
            "{what:<20} {seen} of {COMPONENTS} services in {pages} pages: {ms:.0} ms ({:.1} ms a page)",
            ms / f64::from(pages)
        );
    }
    Ok(())
}
