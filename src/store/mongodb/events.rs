//! The change feed in MongoDB, without multi-document transactions (a standalone server has none, and the
//! original's layout is kept).
//!
//! An event is *reserved* before its change: inserted as `pending` under the next free sequence (`seq`, unique,
//! taken as the highest one plus one, retried on a duplicate key, so sequence N+1 exists only once N does). The change
//! then records the sequence in the component document itself (`event_seqs`, atomically with the change, since
//! it is one document), and the writer marks the event `committed` (or `aborted` when nothing changed). Readers
//! deliver events strictly in sequence order and stop at the first pending one, so nothing becomes visible on
//! the feed out of order, and no event is delivered for a change that did not happen. A reader that finds an
//! event pending for longer than [`PENDING_TIMEOUT`] (its writer crashed or is stuck) settles it from the
//! component document: committed when the document carries the sequence (for a deletion: when the document is
//! gone), aborted otherwise. Settling is a compare-and-set from `pending`; a writer that loses that race to an
//! abort after all applied its change announces it again under a new sequence, so no change goes unannounced.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use super::documents::Decoded;
use super::{is_duplicate_key, map_err};
use crate::domain::{Component, ComponentKey, Event, EventDraft, EventType};
use crate::store::{EventBatch, EventRetention, EventSignal, StoreError};

/// How long an event may stay pending before a reader settles it itself.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a process looks for events appended by other replicas.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Attempts at taking the next free sequence when concurrent writers keep taking it first.
const RESERVE_ATTEMPTS: usize = 256;
/// Sequences each component document keeps (enough to settle any change still pending).
pub const KEPT_SEQUENCES: i32 = 32;
/// The field of a component document that records the sequences of its changes.
pub const SEQUENCES_FIELD: &str = "event_seqs";

const PENDING: &str = "pending";
const COMMITTED: &str = "committed";
const ABORTED: &str = "aborted";
const FLOOR: &str = "floor";
/// The `event_meta` document that holds the feed's id.
const FEED: &str = "feed";

#[derive(Clone)]
pub struct EventLog {
    events: Collection<Document>,
    meta: Collection<Document>,
    /// The alias records: an alias move records its sequence in its record, as a change does in its component.
    aliases: Collection<Document>,
    /// The rollouts: a rollout's events record their sequences in its document.
    rollouts: Collection<Document>,
    signal: EventSignal,
    polling: Arc<AtomicBool>,
    indexes: Arc<tokio::sync::OnceCell<()>>,
    feed_id: Arc<tokio::sync::OnceCell<String>>,
}

fn to_i64(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

fn sequence_of(document: &Document) -> u64 {
    super::documents::integer(document.get("seq"))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_default()
}

fn encode(draft: &EventDraft) -> Result<Document, StoreError> {
    bson::to_document(draft).map_err(|e| StoreError::Backend(format!("encoding an event: {e}")))
}

fn decode(document: &Document) -> Result<Event, StoreError> {
    let draft = document
        .get_document("event")
        .map_err(|e| StoreError::Backend(format!("a stored event is damaged: {e}")))?;
    let draft: EventDraft = bson::from_document(draft.clone())
        .map_err(|e| StoreError::Backend(format!("a stored event is damaged: {e}")))?;
    let at = document
        .get_datetime("at")
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
        .unwrap_or_default();
    Ok(draft.at(sequence_of(document), at))
}

/// The `$push` that records `sequence` in a component document, keeping the last few.
pub fn record_sequence(sequence: i64) -> Document {
    doc! { SEQUENCES_FIELD: { "$each": [sequence], "$slice": -KEPT_SEQUENCES } }
}

impl EventLog {
    pub fn new(metadata: &Database) -> Self {
        Self {
            events: metadata.collection("events"),
            meta: metadata.collection("event_meta"),
            aliases: metadata.collection(super::ALIASES),
            rollouts: metadata.collection(super::rollouts::ROLLOUTS),
            signal: EventSignal::new(0),
            polling: Arc::new(AtomicBool::new(false)),
            indexes: Arc::new(tokio::sync::OnceCell::new()),
            feed_id: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The feed's id: made by the first server to ask (every replica then reads the same one) and kept.
    pub async fn feed_id(&self) -> Result<String, StoreError> {
        self.feed_id
            .get_or_try_init(|| async {
                let filter = doc! { "_id": FEED };
                let made = doc! { "$setOnInsert": { "id": uuid::Uuid::new_v4().to_string() } };
                // Two replicas upserting at once: one inserts, the other gets a duplicate key and reads.
                match self
                    .meta
                    .update_one(filter.clone(), made)
                    .upsert(true)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(map_err(e)),
                }
                let found = self.meta.find_one(filter).await.map_err(map_err)?;
                found
                    .as_ref()
                    .and_then(|d| d.get_str("id").ok())
                    .map(str::to_owned)
                    .ok_or_else(|| StoreError::Backend("the change feed has no id".into()))
            })
            .await
            .cloned()
    }

    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.indexes
            .get_or_try_init(|| async {
                // The sequence is its own field, not `_id`: one unique index keeps it gap-free under
                // concurrent writers, and any server sorts it as the number it is.
                let sequence = IndexModel::builder()
                    .keys(doc! { "seq": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build();
                self.events.create_index(sequence).await.map_err(map_err)?;
                let pending = IndexModel::builder()
                    .keys(doc! { "state": 1, "seq": 1 })
                    .build();
                self.events.create_index(pending).await.map_err(map_err)?;
                Ok::<_, StoreError>(())
            })
            .await
            .map(|_| ())
    }

    /// Wakes subscribers when this or another replica appends: one poller per process, however many subscribers,
    /// running while anyone listens.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let receiver = self.signal.subscribe();
        if !self.polling.swap(true, Ordering::SeqCst) {
            let log = self.clone();
            tokio::spawn(async move { log.poll().await });
        }
        receiver
    }

    async fn poll(self) {
        loop {
            if self.signal.receivers() == 0 {
                self.polling.store(false, Ordering::SeqCst);
                // A subscriber that came in between found `polling` still set: keep going for it.
                if self.signal.receivers() == 0 || self.polling.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
            match self.max_sequence().await {
                Ok(last) => self.signal.raise(last),
                Err(e) => tracing::debug!(error = %e, "polling the change feed failed"),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn floor(&self) -> Result<u64, StoreError> {
        let found = self
            .meta
            .find_one(doc! { "_id": FLOOR })
            .await
            .map_err(map_err)?;
        Ok(found
            .and_then(|d| super::documents::integer(d.get("seq")))
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    }

    async fn max_sequence(&self) -> Result<u64, StoreError> {
        let last = self
            .events
            .find_one(doc! {})
            .sort(doc! { "seq": -1 })
            .projection(doc! { "seq": 1 })
            .await
            .map_err(map_err)?;
        Ok(last
            .as_ref()
            .map_or(0, sequence_of)
            .max(self.floor().await?))
    }

    /// The highest sequence below which every event is settled: where a subscriber "from now" starts.
    pub async fn last_settled(&self) -> Result<u64, StoreError> {
        let pending = self
            .events
            .find_one(doc! { "state": PENDING })
            .sort(doc! { "seq": 1 })
            .projection(doc! { "seq": 1 })
            .await
            .map_err(map_err)?;
        match pending {
            Some(pending) => Ok(sequence_of(&pending).saturating_sub(1)),
            None => self.max_sequence().await,
        }
    }

    async fn insert_at_next(&self, state: &str, draft: &EventDraft) -> Result<i64, StoreError> {
        self.ensure_indexes().await?;
        let event = encode(draft)?;
        for _ in 0..RESERVE_ATTEMPTS {
            let sequence = to_i64(self.max_sequence().await? + 1);
            let document = doc! {
                "seq": sequence,
                "state": state,
                "at": bson::DateTime::from_millis(crate::domain::now().timestamp_millis()),
                "event": event.clone(),
            };
            match self.events.insert_one(document).await {
                Ok(_) => return Ok(sequence),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(StoreError::Contended(
            "too many concurrent changes took the next event sequence; try again".into(),
        ))
    }

    /// Runs `change` between reserving its event and settling it. `change` gets the sequence to record in the
    /// component document and answers with the event's final form, or `None` when it changed nothing.
    pub async fn recorded<T, F, Fut>(
        &self,
        event_type: EventType,
        key: &ComponentKey,
        change: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(i64) -> Fut,
        Fut: Future<Output = Result<(T, Option<EventDraft>), StoreError>>,
    {
        self.recorded_as(EventDraft::bare(event_type, key.clone()), change)
            .await
    }

    /// [`EventLog::recorded`] with the whole draft reserved, for events that a stale reservation cannot rebuild
    /// from a component document (alias moves).
    pub async fn recorded_as<T, F, Fut>(
        &self,
        reservation: EventDraft,
        change: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(i64) -> Fut,
        Fut: Future<Output = Result<(T, Option<EventDraft>), StoreError>>,
    {
        let sequence = self.insert_at_next(PENDING, &reservation).await?;
        let outcome = change(sequence).await;
        let settled = match &outcome {
            Ok((_, Some(draft))) => self.commit(sequence, draft).await,
            Ok((_, None)) | Err(_) => self.settle(sequence, ABORTED, None).await.map(|_| ()),
        };
        if let Err(e) = settled {
            // A reader settles it after the timeout, from the component document.
            tracing::warn!(sequence, error = %e, "an event stays pending");
        }
        outcome.map(|(value, _)| value)
    }

    async fn commit(&self, sequence: i64, draft: &EventDraft) -> Result<(), StoreError> {
        if self.settle(sequence, COMMITTED, Some(draft)).await? {
            self.signal.raise(sequence as u64);
        } else {
            // A reader gave up on us and aborted the reservation; the change happened, so announce it anew.
            let again = self.insert_at_next(COMMITTED, draft).await?;
            self.signal.raise(again as u64);
        }
        Ok(())
    }

    /// Compare-and-set from pending; false when someone else settled it first.
    async fn settle(
        &self,
        sequence: i64,
        state: &str,
        draft: Option<&EventDraft>,
    ) -> Result<bool, StoreError> {
        let mut set = doc! { "state": state };
        if let Some(draft) = draft {
            set.insert("event", encode(draft)?);
        }
        let result = self
            .events
            .update_one(
                doc! { "seq": sequence, "state": PENDING },
                doc! { "$set": set },
            )
            .await
            .map_err(map_err)?;
        Ok(result.modified_count == 1)
    }

    /// Settles an event whose writer went away, from what the component document says.
    async fn settle_stale(
        &self,
        document: &Document,
        current: Option<(Document, Component)>,
    ) -> Result<(), StoreError> {
        let sequence = super::documents::integer(document.get("seq")).unwrap_or_default();
        let event = decode(document)?;
        let sequences = |d: &Document| -> Vec<i64> {
            d.get_array(SEQUENCES_FIELD)
                .map(|a| {
                    a.iter()
                        .filter_map(|b| super::documents::integer(Some(b)))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(rollout) = &event.draft.rollout {
            // A rollout's event happened when the rollout's document carries the sequence.
            let happened = self
                .rollouts
                .find_one(doc! { "_id": &rollout.id })
                .await
                .map_err(map_err)?
                .is_some_and(|d| sequences(&d).contains(&sequence));
            let state = if happened { COMMITTED } else { ABORTED };
            tracing::warn!(
                sequence,
                state,
                "settled a rollout event its writer left pending"
            );
            let draft = happened.then(|| event.draft.clone());
            self.settle(sequence, state, draft.as_ref()).await?;
            return Ok(());
        }
        if let (Some(moved), ComponentKey::Model(model)) = (&event.draft.alias, &event.draft.key) {
            // An alias move happened when its record carries the sequence.
            let record = self
                .aliases
                .find_one(doc! { "model_name": &model.name, "alias": &moved.alias })
                .await
                .map_err(map_err)?;
            let draft = record
                .filter(|d| sequences(d).contains(&sequence))
                .map(|_| event.draft.clone());
            let state = if draft.is_some() { COMMITTED } else { ABORTED };
            tracing::warn!(
                sequence,
                state,
                "settled an alias event its writer left pending"
            );
            self.settle(sequence, state, draft.as_ref()).await?;
            return Ok(());
        }
        let draft = match (event.draft.event_type, current) {
            (EventType::Deleted, None) => Some(event.draft.clone()),
            // Deleted, then created again (its sequences are all newer).
            (EventType::Deleted, Some((d, _))) if sequences(&d).iter().all(|s| *s > sequence) => {
                Some(event.draft.clone())
            }
            (EventType::Deleted, Some(_)) | (_, None) => None,
            (event_type, Some((d, component))) if sequences(&d).contains(&sequence) => {
                Some(EventDraft {
                    event_type,
                    ..EventDraft::created(&component)
                })
            }
            (_, Some(_)) => None,
        };
        let state = if draft.is_some() { COMMITTED } else { ABORTED };
        tracing::warn!(sequence, state, "settled an event its writer left pending");
        self.settle(sequence, state, draft.as_ref()).await?;
        Ok(())
    }

    /// Up to `limit` committed events after `after`, stopping at the first one still pending. `lookup` finds the
    /// current document of a component, to settle stale reservations.
    pub async fn read<L, LF>(
        &self,
        after: u64,
        limit: usize,
        lookup: L,
    ) -> Result<EventBatch, StoreError>
    where
        L: Fn(ComponentKey) -> LF,
        LF: Future<Output = Result<Option<(Document, Decoded)>, StoreError>>,
    {
        let floor = self.floor().await?;
        if after < floor {
            return Err(StoreError::EventsExpired { after, floor });
        }
        let mut batch = EventBatch {
            events: Vec::new(),
            next_after: after,
        };
        if limit == 0 {
            // (A limit of 0 means "no limit" to MongoDB.)
            return Ok(batch);
        }
        let mut cursor = self
            .events
            .find(doc! { "seq": { "$gt": to_i64(after) } })
            .sort(doc! { "seq": 1 })
            .limit(limit as i64)
            .await
            .map_err(map_err)?;
        while let Some(mut document) = cursor.try_next().await.map_err(map_err)? {
            let sequence = sequence_of(&document);
            if sequence != batch.next_after + 1 {
                // Not yet visible to this read (never skipped: it is read next time).
                break;
            }
            if document.get_str("state") == Ok(PENDING) {
                let reserved_at = document
                    .get_datetime("at")
                    .map(|t| t.timestamp_millis())
                    .unwrap_or_default();
                let age = crate::domain::now().timestamp_millis() - reserved_at;
                if age < PENDING_TIMEOUT.as_millis() as i64 {
                    break;
                }
                let key = decode(&document)?.draft.key;
                let current = lookup(key)
                    .await?
                    .map(|(d, decoded)| (d, decoded.component));
                self.settle_stale(&document, current).await?;
                match self
                    .events
                    .find_one(doc! { "seq": to_i64(sequence) })
                    .await
                    .map_err(map_err)?
                {
                    Some(settled) => document = settled,
                    None => break,
                }
            }
            batch.next_after = sequence;
            if document.get_str("state") == Ok(COMMITTED) {
                batch.events.push(decode(&document)?);
            }
        }
        Ok(batch)
    }

    pub async fn expire(&self, retention: &EventRetention) -> Result<u64, StoreError> {
        let count = self
            .events
            .count_documents(doc! {})
            .await
            .map_err(map_err)?;
        let mut cut = 0u64;
        if count > retention.max_count {
            let skip = count - retention.max_count - 1;
            if let Some(d) = self
                .events
                .find_one(doc! {})
                .sort(doc! { "seq": 1 })
                .skip(skip)
                .projection(doc! { "seq": 1 })
                .await
                .map_err(map_err)?
            {
                cut = sequence_of(&d);
            }
        }
        let cutoff = crate::domain::now()
            - chrono::Duration::from_std(retention.max_age).unwrap_or(chrono::Duration::MAX);
        if let Some(d) = self
            .events
            .find_one(
                doc! { "at": { "$lt": bson::DateTime::from_millis(cutoff.timestamp_millis()) } },
            )
            .sort(doc! { "seq": -1 })
            .projection(doc! { "seq": 1 })
            .await
            .map_err(map_err)?
        {
            cut = cut.max(sequence_of(&d));
        }
        if cut == 0 || cut <= self.floor().await? {
            return Ok(0);
        }
        // The floor first: a reader never finds events missing without being told they expired.
        let raised = self
            .meta
            .update_one(
                doc! { "_id": FLOOR, "seq": { "$lt": to_i64(cut) } },
                doc! { "$set": { "seq": to_i64(cut) } },
            )
            .await
            .map_err(map_err)?;
        if raised.matched_count == 0 {
            match self
                .meta
                .insert_one(doc! { "_id": FLOOR, "seq": to_i64(cut) })
                .await
            {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        let removed = self
            .events
            .delete_many(doc! { "seq": { "$lte": to_i64(cut) } })
            .await
            .map_err(map_err)?;
        Ok(removed.deleted_count)
    }
}

/// The sequence field of a document just inserted: its first recorded change.
pub fn first_sequence(sequence: i64) -> (String, Bson) {
    (
        SEQUENCES_FIELD.to_string(),
        Bson::Array(vec![Bson::Int64(sequence)]),
    )
}

#[async_trait::async_trait]
impl crate::store::FeedStore for super::MongoStore {
    async fn events(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
        self.events
            .read(after, limit, |key| async move {
                let Some(document) = self
                    .collection(key.kind())
                    .find_one(super::documents::key_filter(&key))
                    .await
                    .map_err(map_err)?
                else {
                    return Ok(None);
                };
                let decoded = self
                    .decode_all(key.kind(), std::slice::from_ref(&document))
                    .await?;
                Ok(decoded.into_iter().next().map(|d| (document, d)))
            })
            .await
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.events.last_settled().await
    }

    async fn feed_id(&self) -> Result<String, StoreError> {
        self.events.feed_id().await
    }

    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    async fn expire_events(&self, retention: &EventRetention) -> Result<u64, StoreError> {
        self.events.expire(retention).await
    }
}
