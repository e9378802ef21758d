//! A loopback TCP proxy that a test can break, in the spirit of crates.io's `chaosproxy.rs`: it forwards
//! connections to a target and, when told, cuts each connection after a number of bytes, stalls it, or refuses new
//! ones, so that tests can prove how clients and servers resume after a broken link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// What the proxy does to traffic; changed at any time through [`ChaosProxy::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward everything.
    #[default]
    None,
    /// Close each connection once it has carried this many bytes (both directions together), counted from the
    /// moment the fault is set for connections already open, and from their start for new ones.
    CutAfter(u64),
    /// Stop forwarding (connections stay open and silent).
    Stall,
    /// Close every open connection and refuse new ones at once: the target is "down".
    Down,
}

pub struct ChaosProxy {
    pub addr: SocketAddr,
    /// Where new connections go: [`ChaosProxy::retarget`] puts another server at the same address.
    target: Arc<std::sync::Mutex<SocketAddr>>,
    fault: watch::Sender<Fault>,
    /// Bytes forwarded from the target to clients since the start (or the last [`ChaosProxy::reset_counters`]).
    downstream: Arc<AtomicU64>,
    /// Bytes forwarded from clients to the target.
    upstream: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    stop: Arc<Notify>,
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        self.fault.send_replace(Fault::Down);
    }
}

impl ChaosProxy {
    /// Starts a proxy on a random loopback port in front of `target` (which must be a loopback address).
    pub async fn start(target: SocketAddr) -> ChaosProxy {
        assert!(
            target.ip().is_loopback(),
            "the chaos proxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, _) = watch::channel(Fault::None);
        let proxy = ChaosProxy {
            addr,
            target: Arc::new(std::sync::Mutex::new(target)),
            fault,
            downstream: Arc::default(),
            upstream: Arc::default(),
            connections: Arc::default(),
            stopped: Arc::default(),
            stop: Arc::default(),
        };
        let faults = proxy.fault.clone();
        let (downstream, upstream, connections) = (
            proxy.downstream.clone(),
            proxy.upstream.clone(),
            proxy.connections.clone(),
        );
        let (stopped, stop) = (proxy.stopped.clone(), proxy.stop.clone());
        let targets = proxy.target.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.notified() => return,
                };
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok((client, _)) = accepted else { continue };
                if *faults.borrow() == Fault::Down {
                    drop(client);
                    continue;
                }
                connections.fetch_add(1, Ordering::SeqCst);
                let target = *targets.lock().unwrap();
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    server,
                    faults.subscribe(),
                    downstream.clone(),
                    upstream.clone(),
                ));
            }
        });
        proxy
    }

    /// The URL of the proxy, for a client that should go through it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends new connections to `target` from now on (open ones stay where they are: set [`Fault::Down`] first to
    /// close them).
    pub fn retarget(&self, target: SocketAddr) {
        assert!(target.ip().is_loopback());
        *self.target.lock().unwrap() = target;
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Bytes the target sent through the proxy.
    pub fn downstream_bytes(&self) -> u64 {
        self.downstream.load(Ordering::SeqCst)
    }

    /// Bytes clients sent through the proxy.
    pub fn upstream_bytes(&self) -> u64 {
        self.upstream.load(Ordering::SeqCst)
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        self.downstream.store(0, Ordering::SeqCst);
        self.upstream.store(0, Ordering::SeqCst);
    }
}

/// Forwards both directions of one connection until either side closes or the fault says to cut it.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    mut faults: watch::Receiver<Fault>,
    downstream: Arc<AtomicU64>,
    upstream: Arc<AtomicU64>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    // Bytes this connection may still carry under a `CutAfter` fault.
    let mut budget = budget_of(*faults.borrow_and_update());
    loop {
        let fault = *faults.borrow();
        if fault == Fault::Down || budget == Some(0) {
            return;
        }
        if fault == Fault::Stall {
            if faults.changed().await.is_err() {
                return;
            }
            budget = budget_of(*faults.borrow_and_update());
            continue;
        }
        // Never read more than the budget allows, so a cut falls exactly where the test asked.
        let cap = budget.map_or(from_client.len(), |b| {
            b.min(from_client.len() as u64) as usize
        });
        tokio::select! {
            read = client_read.read(&mut from_client[..cap]) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if server_write.write_all(&from_client[..n]).await.is_err() { return }
                upstream.fetch_add(n as u64, Ordering::SeqCst);
                budget = budget.map(|b| b - n as u64);
            }
            read = server_read.read(&mut from_server[..cap]) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if client_write.write_all(&from_server[..n]).await.is_err() { return }
                downstream.fetch_add(n as u64, Ordering::SeqCst);
                budget = budget.map(|b| b - n as u64);
            }
            changed = faults.changed() => {
                if changed.is_err() { return }
                budget = budget_of(*faults.borrow_and_update());
            }
        }
    }
}

fn budget_of(fault: Fault) -> Option<u64> {
    match fault {
        Fault::CutAfter(n) => Some(n),
        _ => None,
    }
}
