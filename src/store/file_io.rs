//! Blocking file work (writes, fsyncs, renames) for a request in flight.

use bytes::{Bytes, BytesMut};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::StoreError;

/// Runs `work`, which blocks on the file system, for the request that awaits it. On the multi-threaded runtime it
/// runs on the current thread (`block_in_place` hands the thread's other tasks to another worker), so the request
/// goes on the moment the work ends: a task woken from the blocking pool queues behind every runnable task, which on
/// a saturated server cost an upload 28 ms at p50 for a 2 ms write and fsync. Elsewhere (a connection thread's
/// runtime, which has no other worker to hand its connections to, and the tests') the work goes to the blocking
/// pool (`crate::blocking`); there a woken request queues only behind its own thread's connections. Either way it
/// runs to its end.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    match Handle::current().runtime_flavor() {
        RuntimeFlavor::MultiThread => Ok(tokio::task::block_in_place(work)),
        _ => crate::blocking::spawn(work)
            .await
            .map_err(|e| StoreError::Backend(e.to_string())),
    }
}

/// Bytes gathered between the network and the disk: large enough for sequential writes, small enough to keep
/// memory flat.
const WRITE_BUFFER: usize = 256 * 1024;

/// Gathers a body's chunks into writes of `WRITE_BUFFER` bytes, so that a request blocks once per full buffer
/// (and a small body once in all) rather than once per chunk.
pub struct Gather(BytesMut);

impl Gather {
    pub fn new() -> Self {
        Self(BytesMut::with_capacity(WRITE_BUFFER))
    }

    /// Adds `chunk`; a full buffer comes back, to be written.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Bytes> {
        self.0.extend_from_slice(chunk);
        (self.0.len() >= WRITE_BUFFER)
            .then(|| std::mem::replace(&mut self.0, BytesMut::with_capacity(WRITE_BUFFER)).freeze())
    }

    /// What is left once the body has ended.
    pub fn rest(self) -> Bytes {
        self.0.freeze()
    }
}
