//! The accept loop: at most `max_connections` served at once, the excess refused with a 503 (yet `/healthz`
//! answered), request headers read within a deadline, stalled responses ended, graceful shutdown.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::lease::{ConnectionLease, StopSignal};

use super::connection_threads::ConnectionThreads;
use super::send_idle::SendIdleTimeout;

/// Connections over the limit that are answered (with a 503, or `/healthz`) at once. A newer one takes the place
/// of the oldest, which is closed: refusing costs a bounded number of sockets, and connections that send nothing
/// cannot keep a liveness probe from its answer.
const OVERFLOW_ANSWERS: usize = 64;
/// Largest read or write buffer of a connection.
const CONNECTION_BUFFER: usize = 64 * 1024;
/// How long a connection over the limit gets to send its request before it is closed.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How connections are accepted and kept.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Longest time a client may take to send a request's headers (also the longest idle keep-alive).
    pub header_read_timeout: Duration,
    /// Longest time a response may make no progress because the client takes no bytes.
    pub send_idle_timeout: Duration,
    /// Threads that serve connections, each a single-threaded runtime; 0: connections are served on the
    /// runtime that accepts them.
    pub connection_threads: usize,
}

/// Accepts connections until `shutdown` completes, then waits for the open ones to finish their requests. With
/// `threads`, each connection is served on one of them; without, on the runtime this loop runs on.
pub async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    threads: Option<Arc<ConnectionThreads>>,
    shutdown: impl Future<Output = ()>,
) {
    // HTTP/1, as before. (hyper-util's version-sniffing builder would wait for a first byte without any timeout.)
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // At most one chunk of a response waits in a connection's buffer when its client is slow (the default lets
        // several pile up), and request heads stay well under this.
        .max_buf_size(CONNECTION_BUFFER)
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut overflow_builder = http1::Builder::new();
    overflow_builder
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(OVERFLOW_HEADER_TIMEOUT);
    let overflow_builder = Arc::new(overflow_builder);

    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // The overflow connections being answered, oldest first; each token is cancelled when its connection ends.
    let mut overflow: VecDeque<CancellationToken> = VecDeque::new();
    // Upgraded connections (WebSocket) outlive their HTTP connection task: they learn of shutdown from this.
    let stopping = StopSignal::new();
    // Connection tasks watch `stop_rx`'s sender: dropping the receiver asks them to finish. Each holds a clone of
    // `done_rx`, so `done_tx.closed()` completes once the last one has ended.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut warned_full = false;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                warned_full = false;
                let peer = stream.peer_addr().ok();
                // The connection's slot (and its part in the shutdown wait) is held by its requests' lease, so that
                // a protocol it upgrades to keeps counting against the limit until it ends too.
                let linger = Arc::new(AtomicBool::new(false));
                let lease = ConnectionLease::new(
                    Arc::new((slot, done_rx.clone())),
                    stopping.clone(),
                    peer,
                    Arc::clone(&linger),
                );
                let service = TowerToHyperService::new(app.clone().map_request(
                    move |mut request: Request<Incoming>| {
                        request.extensions_mut().insert(lease.clone());
                        request
                    },
                ));
                let builder = Arc::clone(&builder);
                let stop_tx = stop_tx.clone();
                let send_idle_timeout = limits.send_idle_timeout;
                let serve = move |stream| {
                    let io = TokioIo::new(SendIdleTimeout::new(stream, send_idle_timeout, linger));
                    serve_connection(builder, io, service, stop_tx)
                };
                match &threads {
                    None => drop(tokio::spawn(serve(stream))),
                    Some(threads) => {
                        if let Err(e) = threads.serve(stream, serve) {
                            tracing::warn!(error = %e, "cannot serve a connection");
                        }
                    }
                }
            }
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: refusing new connections with 503"
                    );
                    warned_full = true;
                }
                overflow.retain(|answering| !answering.is_cancelled());
                if overflow.len() >= OVERFLOW_ANSWERS {
                    if let Some(oldest) = overflow.pop_front() {
                        oldest.cancel();
                    }
                }
                let answering = CancellationToken::new();
                overflow.push_back(answering.clone());
                let service = TowerToHyperService::new(tower::service_fn({
                    let app = app.clone();
                    move |request| overflow_answer(app.clone(), request)
                }));
                let builder = Arc::clone(&overflow_builder);
                tokio::spawn(async move {
                    let ended = answering.clone().drop_guard();
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                        () = answering.cancelled() => {}
                    }
                    drop(ended);
                });
            }
        }
    }
    drop(listener);
    stopping.stop();
    drop(stop_rx);
    drop(done_rx);
    done_tx.closed().await;
}

/// Serves one connection's requests until it ends; once shutdown begins (`stop_tx` closed), finishes the request in
/// flight and ends.
async fn serve_connection<S>(
    builder: Arc<http1::Builder>,
    io: TokioIo<SendIdleTimeout>,
    service: S,
    stop_tx: watch::Sender<()>,
) where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
{
    // Upgrades: GraphQL over WebSocket.
    let mut connection = pin!(builder.serve_connection(io, service).with_upgrades());
    let mut stopping = pin!(stop_tx.closed());
    let mut asked_to_stop = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut stopping, if !asked_to_stop => {
                asked_to_stop = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection over the limit gets: `/healthz` as usual (a liveness probe must not fail because the server
/// is busy), anything else a 503 that asks the client to come back.
async fn overflow_answer(
    app: axum::Router,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if request.uri().path() == "/healthz" {
        return app.oneshot(request.map(Body::new)).await;
    }
    let mut response = Response::new(Body::from(
        r#"{"detail":"the server is at its connection limit; retry shortly"}"#,
    ));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    // Answered outside the router: its security headers are added here.
    Ok(crate::api::headers::secure(response).await)
}

/// Waits out accept errors: a full file-descriptor table clears as connections close, and a connection reset
/// before it was accepted concerns nobody.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "cannot accept a connection; retrying shortly");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The connection limit that fits a file-descriptor limit: each connection may hold a second descriptor (a stored
/// file it sends, an upload it stages), and a reserve stays for the store and the logs.
pub fn max_connections_for(descriptors: u64) -> usize {
    const RESERVE: u64 = 256;
    const CEILING: u64 = 10_000;
    (descriptors.saturating_sub(RESERVE) / 2).clamp(16, CEILING) as usize
}

/// The process's (soft) file-descriptor limit.
pub fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Raises the soft file-descriptor limit to the hard one, as most servers do, and returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the structs we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        // An unlimited hard limit cannot be the soft one for descriptors; such systems keep their soft limit.
        if limit.rlim_cur < limit.rlim_max && limit.rlim_max != libc::RLIM_INFINITY {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}
