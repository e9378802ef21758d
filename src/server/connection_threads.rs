//! Connections served on threads of their own, each a single-threaded runtime, the way nginx's workers serve
//! theirs: a connection stays on one thread for its life, so the kernel's "readable"/"writable" reaches its task
//! without a hand-off between a shared runtime's workers. With 4 downloads of 4 GiB on 2 cores that took the server
//! from 0.97× nginx's throughput to 1.06–1.07× (`docs/benchmarks.md`, "A thread per core for connections"). The
//! store's housekeeping, the MongoDB driver and everything not tied to a connection stay on the main runtime.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// How long a connection thread waits, once told to stop, for blocking work of its own (its file and database work
/// runs on the main runtime's pool).
const BLOCKING_WORK_GRACE: Duration = Duration::from_secs(5);

/// The connection threads; a connection goes to the one serving the fewest.
pub struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
    /// Where the search for the least busy thread starts, so that ties take turns.
    next: AtomicUsize,
    stop: CancellationToken,
}

struct ConnectionThread {
    runtime: Handle,
    /// Connections this thread serves now.
    serving: Arc<AtomicUsize>,
    joined: Option<JoinHandle<()>>,
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one). Their blocking work goes to the pool of the runtime this is called
    /// on (`crate::blocking`).
    pub fn start(count: usize) -> io::Result<Self> {
        let main = Handle::current();
        let stop = CancellationToken::new();
        let threads = (0..count.max(1))
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let handle = runtime.handle().clone();
                let stop = stop.clone();
                let main = main.clone();
                let joined = std::thread::Builder::new()
                    .name(format!("connections-{index}"))
                    .spawn(move || {
                        crate::blocking::use_pool_of(main);
                        runtime.block_on(stop.cancelled());
                        runtime.shutdown_timeout(BLOCKING_WORK_GRACE);
                    })?;
                Ok(ConnectionThread {
                    runtime: handle,
                    serving: Arc::new(AtomicUsize::new(0)),
                    joined: Some(joined),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// Moves `stream` to the thread that serves the fewest connections, where its socket is registered with that
    /// thread's runtime and polled for the connection's life, and serves it there with `serve`.
    pub fn serve<Serve, Served>(&self, stream: TcpStream, serve: Serve) -> io::Result<()>
    where
        Serve: FnOnce(TcpStream) -> Served + Send + 'static,
        Served: Future<Output = ()> + Send + 'static,
    {
        let stream = stream.into_std()?;
        self.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot serve a connection"),
            }
        });
        Ok(())
    }

    /// Runs `connection` on the thread that serves the fewest connections, counting it there until it ends.
    fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.threads.len();
        let thread = (0..count)
            .map(|offset| &self.threads[(start + offset) % count])
            .min_by_key(|thread| thread.serving.load(Ordering::Relaxed))
            .expect("at least one connection thread");
        let serving = Counted::new(Arc::clone(&thread.serving));
        // A map, not an async block awaiting `connection`: that block would hold the connection's future twice (its
        // captured copy and the one it awaits), 1.2 KiB more for every connection.
        let task = connection.map(move |()| drop(serving));
        thread.runtime.spawn(task);
    }

    /// Connections each thread serves now, in thread order.
    #[cfg(test)]
    fn serving(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|thread| thread.serving.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops the threads, dropping the connections they still serve, and waits until they have ended (so that
    /// nothing they hold, the store included, outlives the server).
    pub async fn stop(mut self) {
        self.stop.cancel();
        let joined: Vec<_> = self
            .threads
            .iter_mut()
            .filter_map(|thread| thread.joined.take())
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in joined {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Drop for ConnectionThreads {
    fn drop(&mut self) {
        // Dropped without `stop` (the server's task was cancelled): the threads still end, unwaited.
        self.stop.cancel();
    }
}

/// One connection in a thread's count, for as long as its task lives (dropped too when the runtime drops it).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(serving: Arc<AtomicUsize>) -> Self {
        serving.fetch_add(1, Ordering::Relaxed);
        Self(serving)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_busy_thread_and_leave_its_count_when_they_end() {
        let threads = ConnectionThreads::start(2).unwrap();
        let (release, released) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let mut released = released.clone();
            threads.spawn(async move {
                let _ = released.wait_for(|done| *done).await;
            });
        }
        assert_eq!(threads.serving(), vec![2, 2]);
        release.send(true).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while threads.serving() != vec![0, 0] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                threads.serving()
            );
            tokio::task::yield_now().await;
        }
        threads.stop().await;
    }

    #[tokio::test]
    async fn a_connection_runs_on_its_thread_not_the_caller_s() {
        let threads = ConnectionThreads::start(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        threads.spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        assert_eq!(rx.await.unwrap().as_deref(), Some("connections-0"));
        threads.stop().await;
    }
}
