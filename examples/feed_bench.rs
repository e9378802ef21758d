//! Latency of the change feed: from a change's commit to its arrival at subscribers, with many connected.
//!
//! ```sh
//! cargo build --release --bins --examples && \
//!   target/release/examples/feed_bench [SUBSCRIBERS] [CHANGES] [INTERVAL_MS] [STALLED] [sse|ws] [-- server flags]
//! ```
//!
//! Starts the server (embedded store, or `-- --store mongodb ...`), connects STALLED (default 10) SSE subscribers
//! that never read a byte and SUBSCRIBERS (default 1,000) that read everything, makes CHANGES (default 200) changes,
//! one every INTERVAL_MS (default 20) milliseconds, and prints the p50/p99/max latency from each event's commit
//! time (`at`, stamped in the committing transaction) to its arrival at every reading subscriber, over all
//! subscriber × change pairs, the p99 of the median and the slowest change, and the server's memory per connected
//! idle subscriber (resident set growth divided by the subscribers). `ws` subscribes over GraphQL WebSocket
//! (`componentEvents`) instead of SSE, the stalled subscribers too. Client and server share the machine's clock and
//! its cores: the bench prints its own CPU time and the load average. The file-descriptor limit is raised to its
//! maximum (the server raises its own).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::bench::{cpu, rss, stats};
use testkit::process;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn percentile(sorted: &[f64], percent: f64) -> f64 {
    stats::percentile(sorted, percent / 100.0).unwrap_or(f64::NAN)
}

/// The subscribers stand for devices on other machines, so they should take as little of the server's cores as they
/// can: one thread polls them all. On tokio's two worker threads a delivery cost the bench 5.5 µs instead of 4.2, the
/// workers waking each other and the server's writes waking whichever slept.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ours, server_flags) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (&args[..], &[][..]),
    };
    let subscribers: usize = ours.first().map_or(Ok(1000), |s| s.parse())?;
    let changes: usize = ours.get(1).map_or(Ok(200), |s| s.parse())?;
    let interval = Duration::from_millis(ours.get(2).map_or(Ok(20), |s| s.parse())?);
    let stalled: usize = ours.get(3).map_or(Ok(10), |s| s.parse())?;
    let websocket = match ours.get(4).map_or("sse", String::as_str) {
        "sse" => false,
        "ws" => true,
        other => anyhow::bail!("TRANSPORT is sse or ws, not {other}"),
    };
    // Each device request or subscriber is a connection: the hard limit, as the server raises its own.
    component_repository::server::raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let flags: Vec<&str> = server_flags.iter().map(String::as_str).collect();
    let server = process::ServerProcess::start(&dir.path().join("data"), &flags);
    let base = server.base.clone();
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(subscribers + 8)
        .build()?;

    // Warm the server up (its first requests allocate what every later one reuses) before its baseline memory.
    client.get(format!("{base}/healthz")).send().await?;
    let rss_before = rss::rss_bytes(pid).unwrap_or_default();
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse()?;
    // Subscribers that never read a byte (of the transport measured): the others must not notice them.
    let mut stalled_sockets = Vec::with_capacity(stalled);
    for _ in 0..stalled {
        let mut socket = TcpStream::connect(addr).await?;
        if websocket {
            socket.write_all(&websocket_hello()).await?;
        } else {
            socket
                .write_all(
                    b"GET /events HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n",
                )
                .await?;
        }
        stalled_sockets.push(socket);
    }
    let connected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        tasks.push(if websocket {
            tokio::spawn(subscribe_websocket(addr, changes, connected.clone()))
        } else {
            tokio::spawn(subscribe(addr, changes, connected.clone()))
        });
    }
    let started = Instant::now();
    while connected.load(Ordering::SeqCst) < subscribers
        || (websocket && websocket_subscribers(&client, &base).await? < subscribers + stalled)
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "subscribers did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The streams are open; let the server finish setting each one up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss::rss_bytes(pid).unwrap_or_default();
    println!(
        "{subscribers} {} subscribers connected in {:?}; server memory {:.1} KiB per idle subscriber ({:.1} MiB \
         -> {:.1} MiB)",
        if websocket {
            "GraphQL WebSocket"
        } else {
            "SSE"
        },
        started.elapsed(),
        rss_after.saturating_sub(rss_before) as f64 / 1024.0 / subscribers as f64,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
    );

    let load_before = load_average();
    let writes = Instant::now();
    let (server_cpu, own_cpu) = (cpu::seconds(pid), cpu::own_seconds());
    let schedule = tokio::time::Instant::now();
    for i in 0..changes {
        // One change every `interval` on a fixed schedule (a slow commit does not push the next ones back), so
        // that each is measured at the offered rate rather than at whatever rate the machine keeps up with.
        tokio::time::sleep_until(schedule + interval * i as u32).await;
        let body: Value = client
            .post(format!("{base}/graphql"))
            .json(&json!({
                "query": "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
                "variables": { "id": format!("bench.s{i}") },
            }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(body.get("errors").is_none(), "{body}");
    }
    // A subscriber hands its socket back rather than closing it: 10,000 connections closing as each gets the last
    // change would compete with that change's own deliveries, and the last change would measure the teardown.
    let mut finished = Vec::with_capacity(subscribers);
    let mut by_change = vec![Vec::with_capacity(subscribers); changes];
    for task in tasks {
        let (latencies, socket) = task.await??;
        for (change, latency) in by_change.iter_mut().zip(latencies) {
            change.push(latency);
        }
        finished.push(socket);
    }
    let (server_cpu, own_cpu) = (cpu::seconds(pid) - server_cpu, cpu::own_seconds() - own_cpu);
    drop(finished);
    let mut all = by_change.concat();
    all.sort_by(f64::total_cmp);
    println!(
        "{changes} changes, one every {interval:?}, in {:?}; {} deliveries; commit -> subscriber latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        writes.elapsed(),
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN),
    );
    // Which changes the tail is made of: a periodic cost (heartbeats, a timer) shows as a few slow changes.
    let mut tails: Vec<(f64, usize)> = by_change
        .iter_mut()
        .enumerate()
        .map(|(i, latencies)| {
            latencies.sort_by(f64::total_cmp);
            (percentile(latencies, 99.0), i)
        })
        .collect();
    tails.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some(median), Some(&(slowest, at))) = (tails.get(tails.len() / 2), tails.last()) {
        println!(
            "p99 of each change: median {:.1} ms, slowest {slowest:.1} ms (change {at})",
            median.0
        );
    }
    // CPU time does not depend on what else runs on the machine the way latency does.
    println!(
        "server CPU {server_cpu:.2} s ({:.2} us per delivery), bench CPU {own_cpu:.2} s, over {:.1} s on {} cores",
        server_cpu * 1e6 / all.len().max(1) as f64,
        writes.elapsed().as_secs_f64(),
        cpu::cores()
    );
    println!(
        "load average {load_before} before the changes, {} after; {stalled} more subscribers connected that never read",
        load_average()
    );
    drop(stalled_sockets);
    drop(server);
    Ok(())
}

/// The machine's 1-minute load average, for the figures' context.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// One subscriber over a plain socket: a hand-written request and a minimal chunked decoder, because the bench
/// shares the server's cores and a full HTTP client per subscriber cost about as much CPU as the server's side of
/// a delivery. Returns the latency of each event, from its commit time (`at`) to the read that brought it, and the
/// socket, still open.
async fn subscribe(
    addr: std::net::SocketAddr,
    changes: usize,
    connected: Arc<AtomicUsize>,
) -> anyhow::Result<(Vec<f64>, TcpStream)> {
    let mut socket = TcpStream::connect(addr).await?;
    socket
        .write_all(b"GET /events HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n")
        .await?;
    let mut buffer = vec![0u8; 8192];
    // Undecoded bytes (the head, then chunk framing) and the decoded SSE text not yet consumed.
    let mut raw: Vec<u8> = Vec::with_capacity(1024);
    let mut text: Vec<u8> = Vec::with_capacity(1024);
    let mut in_body = false;
    let mut latencies = Vec::with_capacity(changes);
    while latencies.len() < changes {
        let read = socket.read(&mut buffer).await?;
        anyhow::ensure!(
            read > 0,
            "the stream ended after {} events",
            latencies.len()
        );
        let arrived = chrono::Utc::now();
        raw.extend_from_slice(&buffer[..read]);
        if !in_body {
            let Some(end) = find(&raw, b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&raw[..end])?.to_ascii_lowercase();
            anyhow::ensure!(head.starts_with("http/1.1 200"), "{head}");
            anyhow::ensure!(head.contains("transfer-encoding: chunked"), "{head}");
            raw.drain(..end + 4);
            in_body = true;
            connected.fetch_add(1, Ordering::SeqCst);
        }
        // Chunks: `size-in-hex\r\n`, that many bytes, `\r\n`.
        let mut at = 0;
        while let Some(line) = find(&raw[at..], b"\r\n") {
            let size_text = std::str::from_utf8(&raw[at..at + line])?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)?;
            anyhow::ensure!(
                size > 0,
                "the stream ended after {} events",
                latencies.len()
            );
            let start = at + line + 2;
            if raw.len() < start + size + 2 {
                break;
            }
            text.extend_from_slice(&raw[start..start + size]);
            at = start + size + 2;
        }
        raw.drain(..at);
        // Events: blocks ending in a blank line; only the commit time is read (no JSON parse).
        let mut consumed = 0;
        while let Some(end) = find(&text[consumed..], b"\n\n") {
            let block = &text[consumed..consumed + end];
            consumed += end + 2;
            let Some(from) = find(block, b"\"at\":\"") else {
                continue;
            };
            let rest = &block[from + 6..];
            let until = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
            let committed: chrono::DateTime<chrono::Utc> =
                std::str::from_utf8(&rest[..until])?.parse()?;
            latencies
                .push((arrived - committed).num_microseconds().unwrap_or_default() as f64 / 1000.0);
        }
        text.drain(..consumed);
    }
    Ok((latencies, socket))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One GraphQL WebSocket subscriber (graphql-transport-ws): `componentEvents` with the fields a device uses; only
/// the commit time is read from each message. A minimal client of the protocol over a plain socket, as for SSE: a
/// tungstenite client per subscriber cost twice the server's CPU per delivery on the cores they share (21 us against
/// 12 at 2,000 subscribers), and the bench measured mostly itself. It writes the handshake and its two messages in
/// one go (masked with a zero key, as the protocol allows), answers pings, and reads whole unfragmented frames, which
/// is all the server sends.
async fn subscribe_websocket(
    addr: std::net::SocketAddr,
    changes: usize,
    connected: Arc<AtomicUsize>,
) -> anyhow::Result<(Vec<f64>, TcpStream)> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.write_all(&websocket_hello()).await?;
    connected.fetch_add(1, Ordering::SeqCst);
    let mut buffer = vec![0u8; 8192];
    let mut raw: Vec<u8> = Vec::with_capacity(1024);
    let mut upgraded = false;
    let mut latencies = Vec::with_capacity(changes);
    while latencies.len() < changes {
        let read = socket.read(&mut buffer).await?;
        anyhow::ensure!(
            read > 0,
            "the socket closed after {} events",
            latencies.len()
        );
        let arrived = chrono::Utc::now();
        raw.extend_from_slice(&buffer[..read]);
        if !upgraded {
            let Some(end) = find(&raw, b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&raw[..end])?;
            anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
            raw.drain(..end + 4);
            upgraded = true;
        }
        let mut at = 0;
        while raw.len() >= at + 2 {
            let opcode = raw[at] & 0x0f;
            let (length, header) = match raw[at + 1] & 0x7f {
                126 if raw.len() >= at + 4 => {
                    (u16::from_be_bytes([raw[at + 2], raw[at + 3]]) as usize, 4)
                }
                127 if raw.len() >= at + 10 => (
                    u64::from_be_bytes(raw[at + 2..at + 10].try_into()?) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if raw.len() < at + header + length {
                break;
            }
            let payload = &raw[at + header..at + header + length];
            match opcode {
                // Text: a result carries its commit time.
                1 => {
                    if let Some(from) = find(payload, b"\"at\":\"") {
                        let rest = &payload[from + 6..];
                        let until = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
                        let committed: chrono::DateTime<chrono::Utc> =
                            std::str::from_utf8(&rest[..until])?.parse()?;
                        latencies.push(
                            (arrived - committed).num_microseconds().unwrap_or_default() as f64
                                / 1000.0,
                        );
                    }
                }
                8 => anyhow::bail!("the server closed after {} events", latencies.len()),
                9 => {
                    let pong = frame(10, payload);
                    socket.write_all(&pong).await?;
                }
                _ => {}
            }
            at += header + length;
        }
        raw.drain(..at);
    }
    Ok((latencies, socket))
}

/// A client frame: FIN, `opcode`, masked with the zero key.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// The upgrade request, `connection_init` and the subscription, in one write.
fn websocket_hello() -> Vec<u8> {
    let mut hello =
        b"GET /graphql HTTP/1.1\r\nhost: bench\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
        sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        sec-websocket-protocol: graphql-transport-ws\r\n\r\n"
            .to_vec();
    hello.extend(frame(1, br#"{"type":"connection_init","payload":{}}"#));
    hello.extend(frame(
        1,
        br#"{"type":"subscribe","id":"1","payload":{"query":"subscription { componentEvents { sequence at type kind id version } }"}}"#,
    ));
    hello
}

/// The server's gauge of GraphQL WebSocket subscribers: a subscription counts once the server follows the feed.
async fn websocket_subscribers(client: &reqwest::Client, base: &str) -> anyhow::Result<usize> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(testkit::app::event_subscribers_in(&text, "graphql_ws") as usize)
}
