//! What the accept loop lends each connection, for the protocols a request upgrades to (GraphQL over WebSocket):
//! the connection's slot against `--max-connections`, held until the upgraded protocol ends, and the signal that
//! the server is stopping, on which it says goodbye.

use std::any::Any;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct ConnectionLease {
    /// Whatever the accept loop counts a connection by; released when the last clone is dropped.
    _held: Arc<dyn Any + Send + Sync>,
    stopping: CancellationToken,
}

impl ConnectionLease {
    pub fn new(held: Arc<dyn Any + Send + Sync>, stopping: CancellationToken) -> ConnectionLease {
        ConnectionLease {
            _held: held,
            stopping,
        }
    }

    /// Completes once the server begins to stop.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await
    }
}
