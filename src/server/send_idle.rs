//! Ends a connection whose client stops taking the response: a write that makes no progress for the send idle
//! timeout fails, hyper drops the connection, and the client resumes later with `Range`. Also where downloads
//! become zero-copy: a write of bytes that are a mapping of a stored file is sent with sendfile(2) from the file
//! (see `crate::zero_copy`); and where a connection whose request body was left unread lingers as it closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::zero_copy::{self, Sendable};

/// A TCP stream whose writes fail once the socket has refused every byte for `timeout`.
///
/// The timer runs only while a write is pending (the client's window is full), so idle keep-alive connections and
/// responses that wait on the store are not affected; any byte the socket accepts starts the wait afresh.
pub struct SendIdleTimeout {
    inner: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    /// TCP_CORK is set: see [`Self::cork`].
    corked: bool,
    /// Set by a response that left its request's body unread: see [`Self::poll_linger`].
    linger: Arc<AtomicBool>,
    /// While lingering: when it ends, and the bytes discarded so far.
    lingering: Option<(Pin<Box<Sleep>>, usize)>,
}

/// Longest a closing connection reads and discards what its client still sends (nginx: `lingering_timeout`).
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Most bytes a closing connection discards before it gives up on its client.
const LINGER_BYTES: usize = 64 << 20;

impl SendIdleTimeout {
    pub fn new(inner: TcpStream, timeout: Duration, linger: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
            corked: false,
            linger,
            lingering: None,
        }
    }

    /// nginx's lingering close: once the FIN is sent, read and discard what the client still sends (the rest of a
    /// body the server refused) until it closes too, for at most `LINGER_TIME` and `LINGER_BYTES`. Closing with
    /// its bytes unread would answer them with a reset, which can destroy the response before the client reads it.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.lingering.is_none() {
            std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.lingering = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        }
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let (_, discarded) = self.lingering.as_mut().expect("lingering");
                    *discarded += buf.filled().len();
                    if *discarded > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        let (until, _) = self.lingering.as_mut().expect("lingering");
        until.as_mut().poll(cx).map(Ok)
    }

    /// While a file is sent, TCP_CORK keeps the kernel from pushing the partial segment that ends each sendfile(2)
    /// (nginx's `tcp_nopush`): fewer, fuller segments, and less of the loopback receiver's work done on our cores.
    /// Lifted when hyper flushes, i.e. once its queue is written, so nothing waits for the kernel's 200 ms ceiling.
    fn cork(&mut self, on: bool) {
        if self.corked != on {
            self.corked = on;
            // A failure only costs the optimisation (the socket may already be closing).
            let _ = zero_copy::set_cork(&self.inner, on);
        }
    }

    /// Passes a write's outcome on, unless it has been pending for longer than the timeout. Polling the timer
    /// registers the task's waker, so a connection that nothing else wakes still notices its deadline.
    fn observe<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Reset instead of a graceful close: the kernel would otherwise keep the unsent bytes (up to a socket
        // buffer) for a client that takes nothing.
        let _ = self.inner.set_zero_linger();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no response bytes for the send idle timeout",
        )))
    }

    /// One sendfile(2) of `bytes`, the way tokio makes a non-blocking write: wait for writability, try, and on
    /// `WouldBlock` (readiness cleared by `try_io`) wait again. A send cut short by a full socket buffer also clears
    /// the readiness (the kernel then says "writable" again once a good part of the buffer is free), as nginx does:
    /// trying again at once moved only the few bytes freed meanwhile, twice as many calls and segments per GiB.
    /// (A file truncated behind the server's back also sends short; its connection then ends by the send idle
    /// timeout instead of at once.)
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &Sendable,
    ) -> Poll<io::Result<usize>> {
        self.cork(true);
        loop {
            std::task::ready!(self.inner.poll_write_ready(cx))?;
            let mut filled = 0;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                let sent = bytes.send(&self.inner)?;
                if sent > 0 && sent < bytes.asked() {
                    filled = sent;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(sent)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => {
                    return Poll::Ready(Ok(filled));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }

    /// A vectored write: by sendfile(2) when it starts with mapped file bytes, else a `writev` of the slices up to
    /// the first mapped one (hyper's queue holds the response head and the body's chunks as separate slices).
    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.first().and_then(|b| zero_copy::lookup(b)) {
            return self.poll_send_file(cx, &first);
        }
        let plain = 1 + bufs
            .iter()
            .skip(1)
            .take_while(|b| zero_copy::lookup(b).is_none())
            .count();
        Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs[..plain.min(bufs.len())])
    }
}

impl AsyncRead for SendIdleTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendIdleTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = match zero_copy::lookup(buf) {
            Some(mapped) => self.poll_send_file(cx, &mapped),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        };
        self.observe(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = self.poll_write_slices(cx, bufs);
        self.observe(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cork(false);
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.observe(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cork(false);
        if self.linger.load(Ordering::Acquire) {
            return self.poll_linger(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
