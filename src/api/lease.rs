//! What the accept loop lends each connection, for the protocols a request upgrades to (GraphQL over WebSocket):
//! the connection's slot against `--max-connections`, held until the upgraded protocol ends, and the signal that
//! the server is stopping, on which long-lived answers (event streams, WebSockets) end.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The server's "stopping" as connections see it: a flag read with one atomic load (`CancellationToken::is_cancelled`
/// takes a lock every connection shares), and the token that wakes those that wait.
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
    pub fn stopped(&self) -> Stopped {
        Stopped {
            waiter: Box::pin(self.0.token.clone().cancelled_owned()),
            signal: self.clone(),
            registered: None,
        }
    }
}

/// The server's stop as a future that long-lived answers poll whenever they have nothing to send: the flag is read
/// with one atomic load, and the waiter (each poll of which takes a lock every connection shares) is polled again
/// only when the polling task's waker changes.
pub struct Stopped {
    signal: StopSignal,
    waiter: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: Option<Waker>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_stopping() {
            return Poll::Ready(());
        }
        let registered = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !registered {
            if self.waiter.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.registered = Some(cx.waker().clone());
        }
        Poll::Pending
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
    pub fn stopping(&self) -> Stopped {
        self.stopping.stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls `stopped` once from a task of its own, which then gives it back still pending.
    async fn pending_in_a_task(mut stopped: Stopped) -> Stopped {
        tokio::spawn(async move {
            assert!(futures_util::poll!(&mut stopped).is_pending());
            (stopped,)
        })
        .await
        .unwrap()
        .0
    }

    #[tokio::test]
    async fn a_stop_wakes_the_task_that_polled_last_though_another_polled_first() {
        let signal = StopSignal::new();
        // Registered with a first task's waker, which then ends: the next poller must be woken, not that one.
        let stopped = pending_in_a_task(signal.stopped()).await;
        let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let mut stopped = stopped;
            assert!(futures_util::poll!(&mut stopped).is_pending());
            waiting_tx.send(()).unwrap();
            stopped.await;
        });
        waiting_rx.await.unwrap();
        signal.stop();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the stop wakes the task waiting now")
            .unwrap();
        assert!(signal.is_stopping());
        // One made after the stop is ready at once.
        assert!(futures_util::poll!(signal.stopped()).is_ready());
    }
}
