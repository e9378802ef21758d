//! Rollouts in redb: each as JSON by id, the newest of each alias, and the open one of each alias; saved through the
//! writer, so a rollout's change and its events commit together.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::components::Change;
use super::writer::Applied;
use super::{EmbeddedStore, OrBackend, events};
use crate::domain::rollout::Rollout;
use crate::domain::{EventDraft, Refusal};
use crate::store::{RolloutStore, StoreError};

/// rollout id -> the rollout as JSON.
const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
/// `model\0alias` -> the id of its newest rollout.
const NEWEST: TableDefinition<&str, &str> = TableDefinition::new("rollouts_newest");
/// `model\0alias` -> the id of its open rollout, while it has one.
const OPEN: TableDefinition<&str, &str> = TableDefinition::new("rollouts_open");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ROLLOUTS).or_backend()?;
    txn.open_table(NEWEST).or_backend()?;
    txn.open_table(OPEN).or_backend()?;
    Ok(())
}

fn slot(rollout: &Rollout) -> String {
    format!("{}\0{}", rollout.model, rollout.alias)
}

fn decode(bytes: &[u8]) -> Result<Rollout, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Backend(format!("a stored rollout is damaged: {e}")))
}

fn encode(rollout: &Rollout) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(rollout).map_err(|e| StoreError::Backend(format!("encoding a rollout: {e}")))
}

fn get(db: &Database, id: &str) -> Result<Option<Rollout>, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = txn.open_table(ROLLOUTS).or_backend()?;
    let found = table.get(id).or_backend()?;
    found.map(|v| decode(v.value())).transpose()
}

/// The rollouts whose ids `ids` lists, skipping any that is gone.
fn by_ids(db: &Database, ids: &[String]) -> Result<Vec<Rollout>, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = txn.open_table(ROLLOUTS).or_backend()?;
    let mut found = Vec::new();
    for id in ids {
        if let Some(v) = table.get(id.as_str()).or_backend()? {
            found.push(decode(v.value())?);
        }
    }
    Ok(found)
}

fn append_all(txn: &WriteTransaction, events: Vec<EventDraft>) -> Result<Option<u64>, StoreError> {
    let mut last = None;
    for draft in events {
        last = Some(events::append(txn, draft)?);
    }
    Ok(last)
}

fn applied(sequence: Option<u64>, value: bool) -> Applied<bool> {
    let done = Applied::new(value, Change::Put(Vec::new()));
    match sequence {
        Some(sequence) => done.event(sequence),
        None => done,
    }
}

#[async_trait::async_trait]
impl RolloutStore for EmbeddedStore {
    async fn insert_rollout(&self, rollout: &Rollout, event: EventDraft) -> Result<(), StoreError> {
        let rollout = rollout.clone();
        self.writer
            .write(Vec::new(), move |txn| {
                let slot = slot(&rollout);
                {
                    let mut open = txn.open_table(OPEN).or_backend()?;
                    if let Some(other) = open.get(slot.as_str()).or_backend()? {
                        return Err(Refusal::RolloutActive(format!(
                            "rollout {} is moving alias {} of model {}: pause, abort or let it finish first",
                            other.value(),
                            rollout.alias,
                            rollout.model
                        ))
                        .into());
                    }
                    open.insert(slot.as_str(), rollout.id.as_str()).or_backend()?;
                }
                txn.open_table(NEWEST)
                    .or_backend()?
                    .insert(slot.as_str(), rollout.id.as_str())
                    .or_backend()?;
                txn.open_table(ROLLOUTS)
                    .or_backend()?
                    .insert(rollout.id.as_str(), encode(&rollout)?.as_slice())
                    .or_backend()?;
                let sequence = append_all(txn, vec![event])?;
                Ok(applied(sequence, true))
            })
            .await
            .map(|_| ())
    }

    async fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| get(db, &id)).await
    }

    async fn rollouts(&self, model: &str) -> Result<Vec<Rollout>, StoreError> {
        let model = model.to_string();
        self.blocking(move |db| {
            // Rollouts are few (one at a time per alias); a scan of their table is cheap.
            let txn = db.begin_read().or_backend()?;
            let mut found = Vec::new();
            for entry in txn.open_table(ROLLOUTS).or_backend()?.iter().or_backend()? {
                let (_, v) = entry.or_backend()?;
                let rollout = decode(v.value())?;
                if rollout.model == model {
                    found.push(rollout);
                }
            }
            found.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
            Ok(found)
        })
        .await
    }

    async fn latest_rollout(
        &self,
        model: &str,
        alias: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        let slot = format!("{model}\0{alias}");
        self.blocking(move |db| {
            let id = {
                let txn = db.begin_read().or_backend()?;
                let table = txn.open_table(NEWEST).or_backend()?;
                let found = table.get(slot.as_str()).or_backend()?;
                found.map(|v| v.value().to_string())
            };
            match id {
                Some(id) => get(db, &id),
                None => Ok(None),
            }
        })
        .await
    }

    async fn open_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        self.blocking(move |db| {
            let ids = {
                let txn = db.begin_read().or_backend()?;
                let mut ids = Vec::new();
                for entry in txn.open_table(OPEN).or_backend()?.iter().or_backend()? {
                    ids.push(entry.or_backend()?.1.value().to_string());
                }
                ids
            };
            by_ids(db, &ids)
        })
        .await
    }

    async fn save_rollout(
        &self,
        rollout: &Rollout,
        settled: bool,
        events: Vec<EventDraft>,
    ) -> Result<bool, StoreError> {
        let rollout = rollout.clone();
        self.writer
            .write(Vec::new(), move |txn| {
                let current = {
                    let table = txn.open_table(ROLLOUTS).or_backend()?;
                    let found = table.get(rollout.id.as_str()).or_backend()?;
                    found.map(|v| decode(v.value())).transpose()?
                };
                match current {
                    Some(stored) if stored.revision + 1 == rollout.revision => {}
                    _ => return Ok(applied(None, false)),
                }
                txn.open_table(ROLLOUTS)
                    .or_backend()?
                    .insert(rollout.id.as_str(), encode(&rollout)?.as_slice())
                    .or_backend()?;
                if settled {
                    let slot = slot(&rollout);
                    let mut open = txn.open_table(OPEN).or_backend()?;
                    let ours = open
                        .get(slot.as_str())
                        .or_backend()?
                        .is_some_and(|v| v.value() == rollout.id);
                    if ours {
                        open.remove(slot.as_str()).or_backend()?;
                    }
                }
                let sequence = append_all(txn, events)?;
                Ok(applied(sequence, true))
            })
            .await
    }
}
