//! What the accept loop lends each connection, for the protocols a request upgrades to (GraphQL over WebSocket):
//! the connection's slot against `--max-connections`, held until the upgraded protocol ends, and the signal that
//! the server is stopping, on which long-lived answers (event streams, WebSockets) end.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct ConnectionLease {
    /// Whatever the accept loop counts a connection by; released when the last clone is dropped.
    _held: Arc<dyn Any + Send + Sync>,
    stopping: CancellationToken,
    peer: Option<SocketAddr>,
}

impl ConnectionLease {
    pub fn new(
        held: Arc<dyn Any + Send + Sync>,
        stopping: CancellationToken,
        peer: Option<SocketAddr>,
    ) -> ConnectionLease {
        ConnectionLease {
            _held: held,
            stopping,
            peer,
        }
    }

    /// The client's address (behind a proxy: the proxy's).
    pub fn peer_ip(&self) -> IpAddr {
        self.peer
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip())
    }

    /// Completes once the server begins to stop (event streams and WebSockets end then).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.stopping.clone().cancelled_owned()
    }
}
