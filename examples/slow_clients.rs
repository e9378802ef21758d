//! Slow and stalled clients on loopback against the real server; bounded in time, it stops by itself.
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/slow_clients stalled [stalled=1000] [clients=100] [seconds=20] [-- server flags]
//! target/release/examples/slow_clients slow-readers [readers=200] [seconds=30] [-- server flags]
//! ```
//!
//! `stalled`: that many connections each request a 16 MiB download and read nothing, while `clients` ordinary
//! clients query, create components and download small files for `seconds`. Prints the ordinary clients'
//! p50/p99 latency and errors, and the server's threads and RSS. Fails (exit 1) on any error.
//!
//! `slow-readers`: that many clients download files at 256 KiB/s each while a writer keeps replacing the files.
//! Every download must complete and hash to one whole version of its file. Fails (exit 1) otherwise.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::bench::stats;
use testkit::data as random;
use testkit::graphql::upload_service_file;
use testkit::process;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::bench::rss::{RssSampler, rss_bytes};
use testkit::sha256_hex;
use tokio::io::AsyncWriteExt;

const MIB: f64 = 1024.0 * 1024.0;
/// How fast a slow reader takes bytes.
const SLOW_RATE: f64 = 256.0 * 1024.0;

/// A client whose requests fail instead of hanging: a stuck server shows as errors, and the run still ends.
fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("a client")
}

async fn graphql(client: &reqwest::Client, base: &str, query: &str) -> anyhow::Result<Value> {
    testkit::graphql::query(client, base, query, json!({})).await
}

async fn create_with_file(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    data: Vec<u8>,
) -> anyhow::Result<()> {
    testkit::graphql::create_service(client, base, id).await?;
    let expected = sha256_hex(&data);
    upload_service_file(client, base, id, data, &expected).await
}

/// Raises this process's file-descriptor limit: the clients need one descriptor each.
fn raise_fd_limit(needed: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the structs we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit failed");
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    if limit.rlim_max < needed {
        bail!(
            "the file-descriptor limit ({}) is below the {needed} this run needs",
            limit.rlim_max
        );
    }
    Ok(())
}

fn threads_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    stats::percentile(sorted, fraction).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Opens a connection with a small receive buffer, asks for `path` and reads nothing.
async fn stall(addr: SocketAddr, path: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(16 * 1024)?;
    let mut stream = socket.connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    Ok(stream)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).take_while(|a| a != "--");
    let mode = args.next().unwrap_or_default();
    let numbers: Vec<u64> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let server_args: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();
    let flags: Vec<&str> = server_args.iter().map(String::as_str).collect();
    match mode.as_str() {
        "stalled" => {
            let stalled = numbers.first().copied().unwrap_or(1000);
            let clients = numbers.get(1).copied().unwrap_or(100);
            let seconds = numbers.get(2).copied().unwrap_or(20);
            stalled_downloads(stalled as usize, clients as usize, seconds, &flags).await
        }
        "slow-readers" => {
            let readers = numbers.first().copied().unwrap_or(200);
            let seconds = numbers.get(1).copied().unwrap_or(30);
            slow_readers(readers as usize, seconds, &flags).await
        }
        _ => bail!("usage: slow_clients stalled|slow-readers [numbers...] [-- server flags]"),
    }
}

async fn stalled_downloads(
    stalled: usize,
    clients: usize,
    seconds: u64,
    flags: &[&str],
) -> anyhow::Result<()> {
    raise_fd_limit(stalled as u64 + clients as u64 * 4 + 256)?;
    let dir = tempfile::tempdir()?;
    // The stalled downloads must stay stalled for the whole run, not be ended by the send idle timeout.
    let mut server_flags = vec!["--send-idle-timeout-secs", "3600"];
    server_flags.extend_from_slice(flags);
    let server = process::ServerProcess::start(&dir.path().join("data"), &server_flags);
    let pid = server.child.id();
    let base = server.base.clone();
    let addr: SocketAddr = base.trim_start_matches("http://").parse()?;
    let client = reqwest::Client::new();
    create_with_file(&client, &base, "large", random::bytes(16 << 20, 1)).await?;
    let small = random::bytes(10_000, 2);
    let small_sha = sha256_hex(&small);
    create_with_file(&client, &base, "small", small).await?;
    let idle_threads = threads_of(pid).unwrap_or(0);

    let opened = Instant::now();
    let mut held = Vec::with_capacity(stalled);
    for _ in 0..stalled {
        held.push(
            stall(addr, "/service/large")
                .await
                .context("opening a stalled download")?,
        );
    }
    // Let the server start every stalled response (read its files up to what the sockets take).
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{stalled} stalled downloads open in {:.1} s; server threads {idle_threads} idle -> {}, RSS {:.0} MiB",
        opened.elapsed().as_secs_f64(),
        threads_of(pid).unwrap_or(0),
        rss_bytes(pid).unwrap_or(0) as f64 / MIB
    );

    let sampler = RssSampler::start(pid);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for n in 0..clients {
        let base = base.clone();
        let small_sha = small_sha.clone();
        tasks.push(tokio::spawn(async move {
            let client = client_with_timeout(Duration::from_secs(10));
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut round = 0u64;
            while Instant::now() < deadline {
                round += 1;
                let started = Instant::now();
                let outcome: anyhow::Result<()> = match round % 3 {
                    0 => graphql(&client, &base, "{ services(first: 20) { totalCount edges { node { id file { size sha256 } } } } }")
                        .await
                        .map(drop),
                    1 => graphql(
                        &client,
                        &base,
                        &format!("mutation {{ createService(input: {{id: \"c{n}-{round}\"}}) {{ id }} }}"),
                    )
                    .await
                    .map(drop),
                    _ => async {
                        let body = client
                            .get(format!("{base}/service/small"))
                            .send()
                            .await?
                            .error_for_status()?
                            .bytes()
                            .await?;
                        if sha256_hex(&body) != small_sha {
                            bail!("a small download hashed wrong");
                        }
                        Ok(())
                    }
                    .await,
                };
                match outcome {
                    Ok(()) => latencies.push((round % 3, started.elapsed())),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors.extend(e);
    }
    let by_kind: Vec<(&str, Vec<Duration>)> = [(0, "query"), (1, "create"), (2, "small download")]
        .into_iter()
        .map(|(kind, name)| {
            let mut of_kind: Vec<Duration> = latencies
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, d)| *d)
                .collect();
            of_kind.sort();
            (name, of_kind)
        })
        .collect();
    let mut latencies: Vec<Duration> = latencies.into_iter().map(|(_, d)| d).collect();
    latencies.sort();
    println!(
        "ordinary clients: {clients} for {seconds} s, {} requests ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, errors {}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        errors.len()
    );
    for (name, of_kind) in &by_kind {
        println!(
            "  {name:<15} {:>6} requests, p50 {:.1} ms, p99 {:.1} ms",
            of_kind.len(),
            ms(percentile(of_kind, 0.50)),
            ms(percentile(of_kind, 0.99))
        );
    }
    println!(
        "server during the run: {} threads, peak RSS {:.0} MiB",
        threads_of(pid).unwrap_or(0),
        sampler.peak() as f64 / MIB
    );
    drop(held);
    for error in errors.iter().take(5) {
        eprintln!("error: {error}");
    }
    if !errors.is_empty() {
        bail!("{} errors", errors.len());
    }
    Ok(())
}

async fn slow_readers(readers: usize, seconds: u64, flags: &[&str]) -> anyhow::Result<()> {
    const FILES: usize = 10;
    const VERSIONS: usize = 4;
    raise_fd_limit(readers as u64 * 2 + 256)?;
    let dir = tempfile::tempdir()?;
    let server = process::ServerProcess::start(&dir.path().join("data"), flags);
    let pid = server.child.id();
    let base = server.base.clone();
    let client = reqwest::Client::new();
    // Versions of 1 to 3 MiB: at 256 KiB/s, each download takes seconds, so many overlap a replacement.
    let versions: Arc<Vec<Vec<Vec<u8>>>> = Arc::new(
        (0..FILES)
            .map(|f| {
                (0..VERSIONS)
                    .map(|v| random::bytes((1 << 20) + (v << 19), (f * VERSIONS + v) as u64 + 10))
                    .collect()
            })
            .collect(),
    );
    let known: Arc<Vec<HashSet<String>>> = Arc::new(
        versions
            .iter()
            .map(|file| file.iter().map(|v| sha256_hex(v)).collect())
            .collect(),
    );
    for (f, file) in versions.iter().enumerate() {
        create_with_file(&client, &base, &format!("f{f}"), file[0].clone()).await?;
    }

    let sampler = RssSampler::start(pid);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let writer = {
        let base = base.clone();
        let versions = versions.clone();
        tokio::spawn(async move {
            let client = client_with_timeout(Duration::from_secs(60));
            let mut replaced = 0u64;
            let mut errors = Vec::new();
            while Instant::now() < deadline {
                let f = replaced as usize % FILES;
                let v = (replaced as usize / FILES + 1) % VERSIONS;
                let data = versions[f][v].clone();
                let expected = sha256_hex(&data);
                match upload_service_file(&client, &base, &format!("f{f}"), data, &expected).await {
                    Ok(()) => replaced += 1,
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (replaced, errors)
        })
    };
    let mut tasks = Vec::new();
    for n in 0..readers {
        let base = base.clone();
        let known = known.clone();
        tasks.push(tokio::spawn(async move {
            // Long enough for the largest version at 256 KiB/s, with room to spare.
            let client = client_with_timeout(Duration::from_secs(120));
            let (mut completed, mut bytes_read) = (0u64, 0u64);
            let mut errors = Vec::new();
            let mut round = n;
            while Instant::now() < deadline {
                let f = round % FILES;
                round += 7;
                let outcome: anyhow::Result<u64> = async {
                    let response = client
                        .get(format!("{base}/service/f{f}"))
                        .send()
                        .await?
                        .error_for_status()?;
                    let length = response.content_length().context("a content length")?;
                    let mut body = response.bytes_stream();
                    let mut hasher = Sha256::new();
                    let started = Instant::now();
                    let mut size = 0u64;
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk?;
                        size += chunk.len() as u64;
                        hasher.update(&chunk);
                        // Take bytes no faster than a slow link would.
                        let due = Duration::from_secs_f64(size as f64 / SLOW_RATE);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    if size != length {
                        bail!("f{f}: {size} of {length} bytes");
                    }
                    if !known[f].contains(&hex::encode(hasher.finalize())) {
                        bail!("f{f}: the bytes are not one whole version");
                    }
                    Ok(size)
                }
                .await;
                match outcome {
                    Ok(size) => {
                        completed += 1;
                        bytes_read += size;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (completed, bytes_read, errors)
        }));
    }
    let (mut completed, mut bytes_read, mut errors) = (0u64, 0u64, Vec::new());
    for task in tasks {
        let (c, b, e) = task.await?;
        completed += c;
        bytes_read += b;
        errors.extend(e);
    }
    let elapsed = seconds as f64;
    let (replaced, writer_errors) = writer.await?;
    println!(
        "{readers} readers at 256 KiB/s: {completed} downloads completed, each one whole version ({:.0} MiB, {:.1} MiB/s), errors {}",
        bytes_read as f64 / MIB,
        bytes_read as f64 / MIB / elapsed,
        errors.len()
    );
    println!(
        "writer: {replaced} files replaced, errors {}; server peak RSS {:.0} MiB, threads {}",
        writer_errors.len(),
        sampler.peak() as f64 / MIB,
        threads_of(pid).unwrap_or(0)
    );
    for error in errors.iter().chain(&writer_errors).take(5) {
        eprintln!("error: {error}");
    }
    if !errors.is_empty() || !writer_errors.is_empty() {
        bail!("{} errors", errors.len() + writer_errors.len());
    }
    Ok(())
}
