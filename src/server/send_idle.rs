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
    /// The last write sent mapped file bytes whose stream goes on: hyper's flush leaves the cork on.
    more_file_follows: bool,
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
            more_file_follows: false,
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
    /// Lifted when hyper flushes, i.e. once its queue is written, so nothing waits for the kernel's 200 ms ceiling;
    /// but not between two stretches of one file's stream (hyper flushes after each): lifting and setting it there
    /// cost 5 % of a single download's throughput.
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
                    self.more_file_follows = true;
                    return Poll::Ready(Ok(filled));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => {
                    self.more_file_follows = !bytes.ends_stream();
                    return Poll::Ready(sent);
                }
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
        self.more_file_follows = false;
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
            None => {
                self.more_file_follows = false;
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }
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
        if !self.more_file_follows {
            self.cork(false);
        }
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn corked(socket: &impl AsRawFd) -> bool {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int option read into `value`, whose size `len` gives.
        let done = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(done, 0);
        value != 0
    }

    #[tokio::test]
    async fn the_cork_stays_on_between_stretches_of_a_file_and_comes_off_after_its_last() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let file = Arc::new(file);
        let end = data.len() as u64;
        let first = zero_copy::map(&file, 0, 100_000, 1, end).expect("cached, it maps");
        let rest = zero_copy::map(&file, 100_000, 200_000, 1, end).expect("cached, it maps");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut read = vec![0u8; 300_000];
            client.read_exact(&mut read).await.map(|_| (read, client))
        });
        let mut server = SendIdleTimeout::new(
            accepted,
            Duration::from_secs(5),
            Arc::new(AtomicBool::new(false)),
        );

        server.write_all(&first).await.unwrap();
        server.flush().await.unwrap();
        assert!(
            corked(&server.inner),
            "hyper's flush after a stretch that more of the file follows leaves the cork on"
        );
        server.write_all(&rest).await.unwrap();
        server.flush().await.unwrap();
        assert!(
            !corked(&server.inner),
            "after the stream's last stretch the flush lifts the cork: its tail leaves at once"
        );
        let (read, _client) = reader.await.unwrap().unwrap();
        assert!(read == data, "the client got the file's bytes");

        server.write_all(&first).await.unwrap();
        server.write_all(b"not a file").await.unwrap();
        server.flush().await.unwrap();
        assert!(
            !corked(&server.inner),
            "an ordinary write after a stretch ends what the cork waited for"
        );
    }
}
