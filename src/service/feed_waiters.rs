//! The live followers waiting for the feed's head to move, woken by whoever moves it (the hub's reader, or a
//! connection thread's relay). A follower registers its task's waker from `poll_next`, without a future of its own:
//! at 10,000 subscribers a `watch::Receiver::changed()` future per follower and delivery, and the async state
//! machine around it, were about a tenth of a delivery's CPU.

use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

#[derive(Default)]
pub(super) struct Waiters {
    list: Mutex<List>,
}

#[derive(Default)]
struct List {
    /// How many times the list was woken: a place of an earlier round is no longer in it.
    round: u64,
    wakers: Vec<Waker>,
    /// Slots of this round let go by followers that went away, taken again before the list grows: subscribers that
    /// come and go while no event comes do not lengthen it.
    free: Vec<usize>,
    /// The last round's vector, emptied, kept for its capacity.
    spare: Vec<Waker>,
}

/// Where a follower's waker stands, so that polling it again before the next wake-up adds nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Place {
    round: u64,
    index: usize,
}

impl Waiters {
    /// Wakes `cx`'s task at the next [`Waiters::wake_all`]. `place` is the follower's own record of its
    /// registration: once per round, however often it is polled, and the latest task's waker if it moved.
    pub fn register(&self, cx: &Context<'_>, place: &mut Option<Place>) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = *place
            && at.round == list.round
            && let Some(waker) = list.wakers.get_mut(at.index)
        {
            if !waker.will_wake(cx.waker()) {
                waker.clone_from(cx.waker());
            }
            return;
        }
        let index = match list.free.pop() {
            Some(index) => {
                list.wakers[index].clone_from(cx.waker());
                index
            }
            None => {
                list.wakers.push(cx.waker().clone());
                list.wakers.len() - 1
            }
        };
        *place = Some(Place {
            round: list.round,
            index,
        });
    }

    /// Lets go of a follower's waker (it is going away): a task that ended is not held until the next event, and
    /// its slot is taken by the next follower to register.
    pub fn forget(&self, place: Place) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if place.round == list.round
            && let Some(waker) = list.wakers.get_mut(place.index)
        {
            *waker = Waker::noop().clone();
            list.free.push(place.index);
        }
    }

    /// Wakes every task registered since the last call; the lock is not held while they are woken.
    pub fn wake_all(&self) {
        let mut wakers = {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            list.round += 1;
            list.free.clear();
            let spare = std::mem::take(&mut list.spare);
            std::mem::replace(&mut list.wakers, spare)
        };
        wakers.drain(..).for_each(Waker::wake);
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if list.spare.capacity() < wakers.capacity() {
            list.spare = wakers;
        }
    }

    #[cfg(test)]
    fn registered(&self) -> usize {
        self.list.lock().unwrap().wakers.len()
    }
}

/// Owns a head signal's sender (a `watch::Sender`, or the `Arc` that is its only strong reference) for the task
/// that moves the head, and when that task ends in any way (it returns, panics, or is dropped with its runtime)
/// drops the sender, then wakes the waiters: they find the signal closed and read the store themselves.
pub(super) struct CloseAndWake<S> {
    /// Declared first, so dropped first: the signal is closed before anyone is woken to look at it.
    sender: S,
    wake: WakeAll,
}

/// Wakes every waiter when dropped.
struct WakeAll(Arc<Waiters>);

impl Drop for WakeAll {
    fn drop(&mut self) {
        self.0.wake_all();
    }
}

impl<S> CloseAndWake<S> {
    pub fn new(sender: S, waiters: Arc<Waiters>) -> Self {
        CloseAndWake {
            sender,
            wake: WakeAll(waiters),
        }
    }

    pub fn sender(&self) -> &S {
        &self.sender
    }

    pub fn waiters(&self) -> &Waiters {
        &self.wake.0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(task: &Arc<Counted>) -> usize {
        task.0.load(Ordering::SeqCst)
    }

    /// Registers `task` as a follower whose registration is recorded in `place`.
    fn register(waiters: &Waiters, task: &Arc<Counted>, place: &mut Option<Place>) {
        waiters.register(&Context::from_waker(&task.clone().into()), place);
    }

    #[test]
    fn a_follower_polled_again_is_woken_once_and_through_its_latest_task() {
        let waiters = Waiters::default();
        let (first, second, moved_to) = (
            Arc::new(Counted::default()),
            Arc::new(Counted::default()),
            Arc::new(Counted::default()),
        );
        let (mut first_place, mut second_place) = (None, None);
        for _ in 0..3 {
            register(&waiters, &first, &mut first_place);
        }
        register(&waiters, &second, &mut second_place);
        // The second follower's stream is now polled by another task: that one is woken, not the first.
        register(&waiters, &moved_to, &mut second_place);
        assert_eq!(waiters.registered(), 2, "one waker per follower");

        waiters.wake_all();
        assert_eq!((woken(&first), woken(&second), woken(&moved_to)), (1, 0, 1));
        waiters.wake_all();
        assert_eq!(woken(&first), 1, "woken once per registration");

        // A place of an earlier round is stale: registering again adds the follower anew.
        register(&waiters, &first, &mut first_place);
        assert_eq!(waiters.registered(), 1);
        waiters.wake_all();
        assert_eq!(woken(&first), 2);
    }

    #[test]
    fn followers_that_come_and_go_between_events_do_not_lengthen_the_list() {
        let waiters = Waiters::default();
        let staying = Arc::new(Counted::default());
        let mut staying_place = None;
        register(&waiters, &staying, &mut staying_place);
        for _ in 0..10_000 {
            let mut place = None;
            waiters.register(&Context::from_waker(Waker::noop()), &mut place);
            waiters.forget(place.unwrap());
        }
        assert_eq!(waiters.registered(), 2, "the slot let go is taken again");
        waiters.wake_all();
        assert_eq!(woken(&staying), 1);
    }

    #[test]
    fn a_follower_that_goes_away_is_not_held_or_woken() {
        let waiters = Waiters::default();
        let (leaving, staying) = (Arc::new(Counted::default()), Arc::new(Counted::default()));
        let (mut leaving_place, mut staying_place) = (None, None);
        register(&waiters, &leaving, &mut leaving_place);
        register(&waiters, &staying, &mut staying_place);
        waiters.forget(leaving_place.unwrap());
        assert_eq!(Arc::strong_count(&leaving), 1, "its waker was let go");
        waiters.wake_all();
        assert_eq!((woken(&leaving), woken(&staying)), (0, 1));
        // Forgetting a place of a round already woken touches nobody else's.
        let mut again = None;
        register(&waiters, &staying, &mut again);
        waiters.forget(staying_place.unwrap());
        waiters.wake_all();
        assert_eq!(woken(&staying), 2);
    }
}
