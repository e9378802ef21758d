//! One complexity budget for all operations of an HTTP request. async-graphql limits each operation; without this, a JSON batch
//! of operations each within the limits would multiply the work (and the response) of one request. The guard
//! (`guard.rs`) spends from it; a transport without batches (WebSocket) has none, and each operation is held to the
//! limit on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The complexity the operations of one request may still spend, shared by all of them.
pub struct RequestBudget {
    limit: usize,
    spent: AtomicUsize,
}

impl RequestBudget {
    pub fn new(max_complexity: usize) -> Arc<Self> {
        Arc::new(RequestBudget {
            limit: max_complexity,
            spent: AtomicUsize::new(0),
        })
    }

    /// Takes an operation's complexity, or refuses with the total the request would have reached.
    pub fn spend(&self, amount: usize) -> Result<(), usize> {
        self.spent
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |spent| {
                spent
                    .checked_add(amount)
                    .filter(|total| *total <= self.limit)
            })
            .map(|_| ())
            .map_err(|spent| spent.saturating_add(amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_shared_until_spent() {
        let budget = RequestBudget::new(10);
        assert_eq!(budget.spend(6), Ok(()));
        assert_eq!(budget.spend(5), Err(11));
        assert_eq!(budget.spend(4), Ok(()));
        assert_eq!(budget.spend(1), Err(11));
    }
}
