//! What the accept loop lends each connection, for the protocols a request upgrades to (GraphQL over WebSocket):
//! the connection's slot against `--max-connections`, held until the upgraded protocol ends, and the signal that
//! the server is stopping, on which long-lived answers (event streams, WebSockets) end.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The server's "stopping" as connections see it: a flag read with one atomic load, for streams that check it on
/// every poll (`CancellationToken::is_cancelled` takes a lock every stream shares), and the token that wakes those
/// that wait.
#[derive(Clone, Default)]
pub struct StopSignal(Arc<StopState>);

#[derive(Default)]
struct StopState {
    stopping: AtomicBool,
    token: CancellationToken,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag, then wakes the waiters: whoever is woken sees the flag raised.
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::Release);
        self.0.token.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Acquire)
    }

    /// Completes once the server begins to stop.
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.0.token.clone().cancelled_owned()
    }
}

#[derive(Clone)]
pub struct ConnectionLease {
    /// Whatever the accept loop counts a connection by; released when the last clone is dropped.
    _held: Arc<dyn Any + Send + Sync>,
    stopping: StopSignal,
    peer: Option<SocketAddr>,
    /// Set when a response leaves its request's body unread: the connection lingers as it closes.
    linger: Arc<AtomicBool>,
}

impl ConnectionLease {
    pub fn new(
        held: Arc<dyn Any + Send + Sync>,
        stopping: StopSignal,
        peer: Option<SocketAddr>,
        linger: Arc<AtomicBool>,
    ) -> ConnectionLease {
        ConnectionLease {
            _held: held,
            stopping,
            peer,
            linger,
        }
    }

    /// Asks the connection to linger as it closes: it reads and discards what the client still sends (for a few
    /// seconds at most) instead of answering it with a reset, which could destroy the response before the client
    /// reads it.
    pub fn linger_on_close(&self) {
        self.linger.store(true, Ordering::Release);
    }

    /// The client's address (behind a proxy: the proxy's).
    pub fn peer_ip(&self) -> IpAddr {
        self.peer
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip())
    }

    /// Completes once the server begins to stop (event streams and WebSockets end then).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.stopping.stopped()
    }

    /// The same signal, for a stream that checks it on every poll.
    pub fn stop_signal(&self) -> StopSignal {
        self.stopping.clone()
    }
}
