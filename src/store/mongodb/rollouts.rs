//! Rollouts in MongoDB: the `rollouts` collection (`_id` is the rollout's id; the rollout itself as JSON text,
//! since its cohort thresholds are unsigned 64-bit numbers BSON cannot hold), and `rollout_slots`, one document per
//! alias with an open rollout, whose unique `_id` lets only one rollout of an alias be open across replicas.
//! A save is a compare-and-set on the revision; its events record their sequences in the rollout's document, so a
//! reader settles an event its writer left pending from there.

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::{Collection, IndexModel};

use super::events::record_sequence;
use super::{MongoStore, is_duplicate_key, map_err};
use crate::domain::rollout::Rollout;
use crate::domain::{EventDraft, Refusal};
use crate::store::{RolloutStore, StoreError};

pub(super) const ROLLOUTS: &str = "rollouts";
const SLOTS: &str = "rollout_slots";

pub(super) fn indexes() -> Vec<IndexModel> {
    [
        doc! { "model": 1, "started_ms": -1 },
        doc! { "model": 1, "alias": 1, "started_ms": -1 },
        doc! { "open": 1 },
    ]
    .into_iter()
    .map(|keys| IndexModel::builder().keys(keys).build())
    .collect()
}

/// Key parts hold no `/`, so `model/alias` names one alias.
fn slot(rollout: &Rollout) -> String {
    format!("{}/{}", rollout.model, rollout.alias)
}

fn decode(document: &Document) -> Result<Rollout, StoreError> {
    let json = document
        .get_str("rollout")
        .map_err(|e| StoreError::Backend(format!("a stored rollout is damaged: {e}")))?;
    serde_json::from_str(json)
        .map_err(|e| StoreError::Backend(format!("a stored rollout is damaged: {e}")))
}

fn encode(rollout: &Rollout) -> Result<String, StoreError> {
    serde_json::to_string(rollout)
        .map_err(|e| StoreError::Backend(format!("encoding a rollout: {e}")))
}

impl MongoStore {
    fn rollout_collection(&self) -> Collection<Document> {
        self.metadata.collection(ROLLOUTS)
    }

    async fn find_rollouts(
        &self,
        filter: Document,
        limit: Option<i64>,
    ) -> Result<Vec<Rollout>, StoreError> {
        let collection = self.rollout_collection();
        let mut find = collection
            .find(filter)
            .sort(doc! { "started_ms": -1, "_id": -1 });
        if let Some(limit) = limit {
            find = find.limit(limit);
        }
        let documents: Vec<Document> = find
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        documents.iter().map(decode).collect()
    }

    /// Appends `draft` as an event of the rollout `id`, its sequence recorded in the rollout's document.
    async fn rollout_event(&self, id: &str, draft: EventDraft) -> Result<(), StoreError> {
        self.events
            .recorded_as(draft.clone(), |sequence| async move {
                self.rollout_collection()
                    .update_one(
                        doc! { "_id": id },
                        doc! { "$push": record_sequence(sequence) },
                    )
                    .await
                    .map_err(map_err)?;
                Ok(((), Some(draft)))
            })
            .await
    }
}

#[async_trait::async_trait]
impl RolloutStore for MongoStore {
    async fn insert_rollout(&self, rollout: &Rollout, event: EventDraft) -> Result<(), StoreError> {
        let slots = self.metadata.collection::<Document>(SLOTS);
        let slot = slot(rollout);
        match slots
            .insert_one(doc! { "_id": &slot, "rollout": &rollout.id })
            .await
        {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {
                let other = slots
                    .find_one(doc! { "_id": &slot })
                    .await
                    .map_err(map_err)?
                    .and_then(|d| d.get_str("rollout").ok().map(str::to_owned))
                    .unwrap_or_default();
                return Err(Refusal::RolloutActive(format!(
                    "rollout {other} is moving alias {} of model {}: pause, abort or let it finish first",
                    rollout.alias, rollout.model
                ))
                .into());
            }
            Err(e) => return Err(map_err(e)),
        }
        let document = doc! {
            "_id": &rollout.id,
            "model": &rollout.model,
            "alias": &rollout.alias,
            "started_ms": rollout.started_at.timestamp_millis(),
            "revision": rollout.revision as i64,
            "open": true,
            "rollout": encode(rollout)?,
        };
        let inserted = self
            .events
            .recorded_as(event.clone(), |sequence| async move {
                let mut document = document;
                document.insert("sequences", vec![sequence]);
                self.rollout_collection()
                    .insert_one(document)
                    .await
                    .map_err(map_err)?;
                Ok(((), Some(event)))
            })
            .await;
        if inserted.is_err() {
            // The alias is not held by a rollout that was never stored.
            let _ = slots
                .delete_one(doc! { "_id": &slot, "rollout": &rollout.id })
                .await;
        }
        inserted
    }

    async fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        self.rollout_collection()
            .find_one(doc! { "_id": id })
            .await
            .map_err(map_err)?
            .as_ref()
            .map(decode)
            .transpose()
    }

    async fn rollouts(&self, model: &str) -> Result<Vec<Rollout>, StoreError> {
        self.find_rollouts(doc! { "model": model }, None).await
    }

    async fn latest_rollout(
        &self,
        model: &str,
        alias: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        Ok(self
            .find_rollouts(doc! { "model": model, "alias": alias }, Some(1))
            .await?
            .pop())
    }

    async fn open_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        self.find_rollouts(doc! { "open": true }, None).await
    }

    async fn save_rollout(
        &self,
        rollout: &Rollout,
        settled: bool,
        events: Vec<EventDraft>,
    ) -> Result<bool, StoreError> {
        let previous = rollout.revision.saturating_sub(1) as i64;
        let saved = self
            .rollout_collection()
            .update_one(
                doc! { "_id": &rollout.id, "revision": previous },
                doc! { "$set": {
                    "revision": rollout.revision as i64,
                    "open": !settled,
                    "rollout": encode(rollout)?,
                } },
            )
            .await
            .map_err(map_err)?;
        if saved.modified_count != 1 {
            return Ok(false);
        }
        // The compare-and-set above is the change; its events follow it, each recorded in the rollout's document.
        for draft in events {
            self.rollout_event(&rollout.id, draft).await?;
        }
        if settled {
            self.metadata
                .collection::<Document>(SLOTS)
                .delete_one(doc! { "_id": slot(rollout), "rollout": &rollout.id })
                .await
                .map_err(map_err)?;
        }
        Ok(true)
    }
}
