//! Where blocking work (file and database calls) goes. Each connection thread's runtime would have a blocking pool of
//! its own, and a burst of downloads would start threads in every one of them (`slow_clients`: 66 threads instead of
//! 36). A connection thread hands its blocking work to the main runtime's pool instead, so one pool serves the process.

use std::cell::RefCell;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

thread_local! {
    static POOL: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Sends this thread's blocking work to `runtime`'s pool (a connection thread, as it starts).
pub fn use_pool_of(runtime: Handle) {
    POOL.with(|pool| *pool.borrow_mut() = Some(runtime));
}

/// `tokio::task::spawn_blocking`, on the pool this thread was given, if any.
pub fn spawn<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match POOL.with(|pool| pool.borrow().clone()) {
        Some(runtime) => runtime.spawn_blocking(work),
        None => tokio::task::spawn_blocking(work),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_thread_given_a_pool_runs_its_blocking_work_there() {
        let main = Handle::current();
        let name = std::thread::spawn(move || {
            let own = tokio::runtime::Builder::new_current_thread()
                .thread_name("own-pool")
                .build()
                .unwrap();
            own.block_on(async {
                let unshared = spawn(|| std::thread::current().name().map(str::to_owned));
                assert_eq!(unshared.await.unwrap().as_deref(), Some("own-pool"));
                use_pool_of(main);
                spawn(|| std::thread::current().name().map(str::to_owned))
                    .await
                    .unwrap()
            })
        })
        .join()
        .unwrap();
        assert_ne!(name.as_deref(), Some("own-pool"));
    }
}
