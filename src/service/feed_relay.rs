//! Per-thread relays of the feed hub's head signal. The hub's reader runs on one runtime (that of the follower that
//! started it), and most followers on the connection threads, each a single-threaded runtime: waking a task of
//! another runtime takes a lock and a
//! syscall (its thread's event fd), 10,000 of each per event at 10,000 subscribers. With a relay per connection
//! thread the reader wakes one task per thread, and that task wakes its thread's followers from their own thread.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use arc_swap::ArcSwap;

use super::feed_hub::{Subscription, Window};
use super::feed_waiters::{CloseAndWake, Waiters};

/// A thread's relay of one hub's signal; the relay's task holds the only strong reference to its sender, so the
/// sender goes (and its followers see the signal closed) when the task ends.
struct Relay {
    /// The hub's window (which the reader replaces when it starts again): whose signal this relays.
    window: Weak<ArcSwap<Window>>,
    head: Weak<watch::Sender<u64>>,
    /// This thread's followers waiting for the head to move.
    waiters: Weak<Waiters>,
}

thread_local! {
    static RELAYS: RefCell<Vec<Relay>> = const { RefCell::new(Vec::new()) };
}

/// `shared`, or on a single-threaded runtime the same window with its head signal relayed by a task of this thread.
pub(super) fn on_this_thread(shared: Subscription) -> Subscription {
    if !crate::runtime::on_single_threaded_runtime() {
        return shared;
    }
    RELAYS.with(|relays| {
        let mut relays = relays.borrow_mut();
        relays.retain(|relay| relay.head.strong_count() > 0);
        let running = relays
            .iter()
            .find(|relay| std::ptr::eq(relay.window.as_ptr(), Arc::as_ptr(&shared.window)))
            .and_then(|relay| Some((relay.head.upgrade()?, relay.waiters.upgrade()?)));
        if let Some((sender, waiters)) = running {
            return Subscription {
                window: shared.window,
                head: sender.subscribe(),
                waiters,
            };
        }
        let mut upstream = shared.head;
        let (sender, head) = watch::channel(*upstream.borrow_and_update());
        let sender = Arc::new(sender);
        let subscription = Subscription {
            window: shared.window,
            head,
            waiters: Arc::default(),
        };
        relays.push(Relay {
            window: Arc::downgrade(&subscription.window),
            head: Arc::downgrade(&sender),
            waiters: Arc::downgrade(&subscription.waiters),
        });
        // The guard is made here, not in the task: a task dropped before it first runs still wakes the followers.
        let closing = CloseAndWake::new(sender, subscription.waiters.clone());
        tokio::spawn(relay(upstream, closing));
        subscription
    })
}

/// Passes each move of the hub's head on to this thread's followers, until the reader stops or no follower on this
/// thread is left; however it ends, those left are woken and find the signal closed.
async fn relay(upstream: watch::Receiver<u64>, closing: CloseAndWake<Arc<watch::Sender<u64>>>) {
    pass_on(upstream, closing.sender(), closing.waiters()).await;
}

async fn pass_on(
    mut upstream: watch::Receiver<u64>,
    local: &watch::Sender<u64>,
    waiters: &Waiters,
) {
    loop {
        tokio::select! {
            changed = upstream.changed() => {
                if changed.is_err() {
                    return;
                }
                local.send_replace(*upstream.borrow_and_update());
                waiters.wake_all();
            }
            () = local.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    fn hub() -> (watch::Sender<u64>, Subscription) {
        let (sender, head) = watch::channel(0);
        let window = Arc::new(ArcSwap::from_pointee(Window::default()));
        let waiters = Arc::default();
        (
            sender,
            Subscription {
                window,
                head,
                waiters,
            },
        )
    }

    /// The head the follower is woken with, waiting as a follower does (registered with the subscription's
    /// waiters), or `None` when the signal closed.
    async fn woken(follower: &mut Subscription) -> Option<u64> {
        let mut place = None;
        let wait = std::future::poll_fn(|cx| {
            follower.waiters.register(cx, &mut place);
            match follower.head.has_changed() {
                Ok(true) => Poll::Ready(Some(())),
                Ok(false) => Poll::Pending,
                Err(_) => Poll::Ready(None),
            }
        });
        // The timer first: a timeout would poll the wait once more when it fires and let a lost wake-up pass.
        tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(5)) => panic!("the follower is not woken"),
            woken = wait => woken?,
        }
        Some(*follower.head.borrow_and_update())
    }

    /// Polls `wait` once: it must be waiting, so that what comes next is what wakes it.
    async fn waiting<F: Future>(wait: Pin<&mut F>) {
        assert!(
            futures_util::poll!(wait).is_pending(),
            "nothing to wake it for yet"
        );
    }

    #[tokio::test]
    async fn followers_on_one_thread_are_woken_through_one_relay_that_ends_with_them() {
        let (reader, shared) = hub();
        let mut first = on_this_thread(shared.clone());
        let mut second = on_this_thread(shared.clone());
        assert!(
            first.head.same_channel(&second.head),
            "one relay per thread"
        );
        assert!(!first.head.same_channel(&shared.head));
        // The hub's receiver and the relay's.
        assert_eq!(reader.receiver_count(), 2);

        {
            let mut first = std::pin::pin!(woken(&mut first));
            let mut second = std::pin::pin!(woken(&mut second));
            waiting(first.as_mut()).await;
            waiting(second.as_mut()).await;
            reader.send_replace(7);
            assert_eq!(first.await, Some(7));
            assert_eq!(second.await, Some(7));
        }

        drop((first, second));
        let relay_gone = async {
            while reader.receiver_count() > 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), relay_gone)
            .await
            .expect("the relay lets the reader go once its followers have left");
        let mut again = on_this_thread(shared);
        let mut again = std::pin::pin!(woken(&mut again));
        waiting(again.as_mut()).await;
        reader.send_replace(8);
        assert_eq!(again.await, Some(8), "a new relay starts");
    }

    #[tokio::test]
    async fn a_relays_followers_learn_that_the_reader_stopped() {
        let (reader, shared) = hub();
        let mut follower = on_this_thread(shared);
        let mut follower = std::pin::pin!(woken(&mut follower));
        waiting(follower.as_mut()).await;
        drop(reader);
        assert_eq!(follower.await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn followers_on_a_multi_threaded_runtime_take_the_readers_signal() {
        let (_reader, shared) = hub();
        let follower = on_this_thread(shared.clone());
        assert!(follower.head.same_channel(&shared.head));
        assert!(Arc::ptr_eq(&follower.waiters, &shared.waiters));
    }
}
