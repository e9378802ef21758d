//! Per-thread relays of the feed hub's head signal. The hub's reader runs on the main runtime, and most followers on
//! the connection threads, each a single-threaded runtime: waking a task of another runtime takes a lock and a
//! syscall (its thread's event fd), 10,000 of each per event at 10,000 subscribers. With a relay per connection
//! thread the reader wakes one task per thread, and that task wakes its thread's followers from their own thread.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use arc_swap::ArcSwap;

use super::feed_hub::{Subscription, Window};

/// A thread's relay of one hub's signal; the relay's task holds the only strong reference to its sender, so the
/// sender goes (and its followers see the signal closed) when the task ends.
struct Relay {
    /// The hub's window (which the reader replaces when it starts again): whose signal this relays.
    window: Weak<ArcSwap<Window>>,
    head: Weak<watch::Sender<u64>>,
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
            .and_then(|relay| relay.head.upgrade());
        if let Some(sender) = running {
            return Subscription {
                window: shared.window,
                head: sender.subscribe(),
            };
        }
        let mut upstream = shared.head;
        let (sender, head) = watch::channel(*upstream.borrow_and_update());
        let sender = Arc::new(sender);
        let subscription = Subscription {
            window: shared.window,
            head,
        };
        relays.push(Relay {
            window: Arc::downgrade(&subscription.window),
            head: Arc::downgrade(&sender),
        });
        tokio::spawn(relay(upstream, sender));
        subscription
    })
}

/// Passes each move of the hub's head on to this thread's followers, until the reader stops or no follower on this
/// thread is left.
async fn relay(mut upstream: watch::Receiver<u64>, local: Arc<watch::Sender<u64>>) {
    loop {
        tokio::select! {
            changed = upstream.changed() => {
                if changed.is_err() {
                    return;
                }
                local.send_replace(*upstream.borrow_and_update());
            }
            () = local.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn hub() -> (watch::Sender<u64>, Subscription) {
        let (sender, head) = watch::channel(0);
        let window = Arc::new(ArcSwap::from_pointee(Window::default()));
        (sender, Subscription { window, head })
    }

    /// The head the follower is woken with, or `None` when the signal closed.
    async fn woken(head: &mut watch::Receiver<u64>) -> Option<u64> {
        tokio::time::timeout(Duration::from_secs(5), head.changed())
            .await
            .expect("the follower is woken")
            .ok()?;
        Some(*head.borrow_and_update())
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

        reader.send_replace(7);
        assert_eq!(woken(&mut first.head).await, Some(7));
        assert_eq!(woken(&mut second.head).await, Some(7));

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
        reader.send_replace(8);
        assert_eq!(woken(&mut again.head).await, Some(8), "a new relay starts");
    }

    #[tokio::test]
    async fn a_relays_followers_learn_that_the_reader_stopped() {
        let (reader, shared) = hub();
        let mut follower = on_this_thread(shared);
        drop(reader);
        assert_eq!(woken(&mut follower.head).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn followers_on_a_multi_threaded_runtime_take_the_readers_signal() {
        let (_reader, shared) = hub();
        let follower = on_this_thread(shared.clone());
        assert!(follower.head.same_channel(&shared.head));
    }
}
