//! The change feed in redb: one table keyed by sequence, written in the same transaction as the change it
//! records, so an event exists exactly when its change does.

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::{EmbeddedStore, OrBackend};
use crate::domain::{Event, EventDraft};
use crate::store::FeedStore;
use crate::store::{EventBatch, EventRetention, StoreError};

/// sequence -> the event as JSON.
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `floor` -> the highest sequence removed by retention (sequences never restart below it).
const EVENT_META: TableDefinition<&str, u64> = TableDefinition::new("event_meta");
const FLOOR: &str = "floor";
/// `id` -> the feed's id, made with the store (or at the first start of a store made before feeds had one).
const FEED: TableDefinition<&str, &str> = TableDefinition::new("feed");
const FEED_ID: &str = "id";

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EVENTS).or_backend()?;
    txn.open_table(EVENT_META).or_backend()?;
    let mut feed = txn.open_table(FEED).or_backend()?;
    if feed.get(FEED_ID).or_backend()?.is_none() {
        let id = uuid::Uuid::new_v4().to_string();
        feed.insert(FEED_ID, id.as_str()).or_backend()?;
    }
    Ok(())
}

pub(super) fn feed_id(db: &Database) -> Result<String, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = txn.open_table(FEED).or_backend()?;
    let id = table.get(FEED_ID).or_backend()?;
    id.map(|v| v.value().to_string())
        .ok_or_else(|| StoreError::Backend("the change feed has no id".into()))
}

fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Backend(format!("a stored event is damaged: {e}")))
}

/// Appends the event of a change inside the change's own transaction; its sequence follows the last one.
pub(super) fn append(txn: &WriteTransaction, draft: EventDraft) -> Result<u64, StoreError> {
    let mut events = txn.open_table(EVENTS).or_backend()?;
    let last = events.last().or_backend()?.map(|(k, _)| k.value());
    let floor = txn
        .open_table(EVENT_META)
        .or_backend()?
        .get(FLOOR)
        .or_backend()?
        .map(|v| v.value());
    let sequence = last.unwrap_or(0).max(floor.unwrap_or(0)) + 1;
    let event = draft.at(sequence, crate::domain::now());
    let bytes = serde_json::to_vec(&event)
        .map_err(|e| StoreError::Backend(format!("encoding an event: {e}")))?;
    events.insert(sequence, bytes.as_slice()).or_backend()?;
    Ok(sequence)
}

pub(super) fn read(db: &Database, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let floor = txn
        .open_table(EVENT_META)
        .or_backend()?
        .get(FLOOR)
        .or_backend()?
        .map_or(0, |v| v.value());
    if after < floor {
        return Err(StoreError::EventsExpired { after, floor });
    }
    let table = txn.open_table(EVENTS).or_backend()?;
    let mut batch = EventBatch {
        events: Vec::new(),
        next_after: after,
    };
    for entry in table
        .range(after.saturating_add(1)..)
        .or_backend()?
        .take(limit)
    {
        let (sequence, value) = entry.or_backend()?;
        batch.next_after = sequence.value();
        batch.events.push(decode(value.value())?);
    }
    Ok(batch)
}

pub(super) fn last(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let last = txn
        .open_table(EVENTS)
        .or_backend()?
        .last()
        .or_backend()?
        .map(|(k, _)| k.value());
    let floor = txn
        .open_table(EVENT_META)
        .or_backend()?
        .get(FLOOR)
        .or_backend()?
        .map(|v| v.value());
    Ok(last.unwrap_or(0).max(floor.unwrap_or(0)))
}

/// Removes the oldest events while there are more than the retention keeps or they are older than it allows.
pub(super) fn expire(db: &Database, retention: &EventRetention) -> Result<u64, StoreError> {
    let cutoff = crate::domain::now()
        - chrono::Duration::from_std(retention.max_age).unwrap_or(chrono::Duration::MAX);
    let txn = db.begin_write().or_backend()?;
    let mut removed = 0u64;
    let mut floor = None;
    {
        let mut events = txn.open_table(EVENTS).or_backend()?;
        let mut count = events.len().or_backend()?;
        loop {
            let Some((sequence, expired)) = events
                .first()
                .or_backend()?
                .map(|(k, v)| Ok::<_, StoreError>((k.value(), decode(v.value())?.at < cutoff)))
                .transpose()?
            else {
                break;
            };
            if count <= retention.max_count && !expired {
                break;
            }
            events.pop_first().or_backend()?;
            count -= 1;
            removed += 1;
            floor = Some(sequence);
        }
    }
    if let Some(floor) = floor {
        txn.open_table(EVENT_META)
            .or_backend()?
            .insert(FLOOR, floor)
            .or_backend()?;
    }
    txn.commit().or_backend()?;
    Ok(removed)
}

#[async_trait::async_trait]
impl FeedStore for EmbeddedStore {
    async fn events(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
        self.blocking(move |db| read(db, after, limit)).await
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.blocking(last).await
    }

    async fn feed_id(&self) -> Result<String, StoreError> {
        self.blocking(feed_id).await
    }

    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signal.subscribe()
    }

    async fn expire_events(&self, retention: &EventRetention) -> Result<u64, StoreError> {
        let retention = *retention;
        self.blocking(move |db| expire(db, &retention)).await
    }
}
