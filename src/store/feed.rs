//! What both stores share about the change feed: a read's answer, retention, and the signal of new events.

use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Event;

/// One read of the change feed.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    pub events: Vec<Event>,
    /// Where the next read continues: past the events returned and past sequences that carry no event (changes
    /// that failed after reserving one).
    pub next_after: u64,
}

/// How long events are kept, and how many at most.
#[derive(Debug, Clone, Copy)]
pub struct EventRetention {
    pub max_age: Duration,
    pub max_count: u64,
}

impl Default for EventRetention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_count: 1_000_000,
        }
    }
}

/// Wakes subscribers after an append; carries the highest sequence known to be appended.
#[derive(Debug, Clone)]
pub struct EventSignal(watch::Sender<u64>);

impl EventSignal {
    pub fn new(last: u64) -> Self {
        Self(watch::Sender::new(last))
    }

    pub fn raise(&self, sequence: u64) {
        self.0.send_if_modified(|current| {
            let newer = sequence > *current;
            if newer {
                *current = sequence;
            }
            newer
        });
    }

    pub fn receivers(&self) -> usize {
        self.0.receiver_count()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}
