//! Model aliases in MongoDB: one record per alias (where it points) and a history collection of moves. A move
//! marks its target version first, so that version refuses deletion before the alias names it.

use futures_util::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Document, doc};

use super::components::Decision;
use super::events::record_sequence;
use super::{MongoStore, is_duplicate_key, map_err};
use crate::domain::rollout::RolloutOutcome;
use crate::domain::{AliasMove, AliasRecord, Component, ComponentKey, EventDraft};
use crate::store::{AliasStore, ComponentStore, StoreError};

/// Where alias records live: the version each alias points at, and every move.
pub(super) const ALIASES: &str = "model_aliases";
pub(super) const ALIAS_HISTORY: &str = "model_alias_history";

/// One move of an alias as `model_alias_history` records it.
fn alias_move_of(model: &str, alias: &str, d: &Document) -> AliasMove {
    AliasMove {
        model: model.to_string(),
        alias: alias.to_string(),
        from: d.get_str("from").ok().map(str::to_owned),
        to: d.get_str("to").ok().map(str::to_owned),
        at: d
            .get_datetime("at")
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
            .unwrap_or_default(),
        by: d.get_str("by").unwrap_or_default().to_string(),
        rollout: d
            .get_str("rollout")
            .ok()
            .and_then(|json| serde_json::from_str(json).ok()),
    }
}

/// One move of an alias as `model_alias_history` records it; a rollout's outcome is kept as its JSON text.
fn history_document(m: &AliasMove) -> Document {
    let mut d = doc! {
        "model_name": &m.model,
        "alias": &m.alias,
        "from": m.from.as_deref(),
        "to": m.to.as_deref(),
        "at": mongodb::bson::DateTime::from_millis(m.at.timestamp_millis()),
        "by": &m.by,
    };
    if let Some(outcome) = &m.rollout {
        d.insert(
            "rollout",
            serde_json::to_string(outcome).unwrap_or_default(),
        );
    }
    d
}

impl MongoStore {
    /// Adds (`on`) or removes the mark of `alias` on a model version, as a revision-guarded read-modify-write.
    async fn mark_alias(
        &self,
        key: &ComponentKey,
        alias: &str,
        on: bool,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        // A mark is no event of its own: the alias record's write is the move.
        self.modify(key, None, |component| {
            component.check_revision(expected)?;
            Ok(match component.with_alias_mark(alias, on) {
                Some(after) => Decision::Write { after, answer: () },
                None => Decision::Unchanged(component.clone()),
            })
        })
        .await
        .map(|_| ())
    }

    /// Points `alias` of model `name` from `from` to `to`: marks the target first, so that it refuses deletion
    /// before the alias names it, then writes the alias record, guarded by where the alias pointed (a deleted
    /// alias stays as a record naming no version) and carrying the event's `sequence`: that one write is the
    /// move. Returns the target. A move that stops half-way leaves at most a stale mark, which a delete verifies.
    async fn point_alias(
        &self,
        name: &str,
        alias: &str,
        from: Option<&str>,
        to: Option<&str>,
        sequence: i64,
        expected: Option<u64>,
    ) -> Result<Option<Component>, StoreError> {
        let target = match to {
            Some(to) => {
                let target = ComponentKey::model(name, to)?;
                // The revision is checked in the same guarded write as the mark, before the alias moves.
                self.mark_alias(&target, alias, true, expected).await?;
                Some(target)
            }
            None => None,
        };
        let guard = doc! { "model_name": name, "alias": alias, "model_version": from };
        let moved = self
            .alias_collection()
            .update_one(
                guard,
                doc! {
                    "$set": { "model_version": to },
                    "$push": record_sequence(sequence),
                },
            )
            .upsert(from.is_none())
            .await;
        match moved {
            Ok(r) if r.matched_count == 1 || r.upserted_id.is_some() => {}
            Err(e) if !is_duplicate_key(&e) => return Err(map_err(e)),
            _ => {
                return Err(StoreError::Contended(format!(
                    "alias {alias} of model {name} was moved by someone else at the same time; read it \
                     again and retry"
                )));
            }
        }
        match &target {
            Some(key) => self.get(key).await,
            None => Ok(None),
        }
    }

    pub(super) fn alias_collection(&self) -> Collection<Document> {
        self.metadata.collection(ALIASES)
    }

    /// The aliases that name the model version `key`, from the alias records (a version's own marks may be stale).
    pub(super) async fn aliases_naming(
        &self,
        key: &ComponentKey,
    ) -> Result<Vec<String>, StoreError> {
        let ComponentKey::Model(model) = key else {
            return Err(StoreError::Backend(format!(
                "{key} has aliases but is no model"
            )));
        };
        self.alias_collection()
            .find(doc! { "model_name": &model.name, "model_version": &model.version })
            .await
            .map_err(map_err)?
            .try_filter_map(|d| std::future::ready(Ok(d.get_str("alias").ok().map(str::to_owned))))
            .try_collect()
            .await
            .map_err(map_err)
    }
}

#[async_trait::async_trait]
impl AliasStore for MongoStore {
    async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        version: Option<&str>,
        by: &str,
        expected: Option<u64>,
    ) -> Result<Option<AliasMove>, StoreError> {
        let aliases = self.alias_collection();
        let slot = doc! { "model_name": name, "alias": alias };
        let from = aliases
            .find_one(slot.clone())
            .await
            .map_err(map_err)?
            .and_then(|d| d.get_str("model_version").ok().map(str::to_owned));
        if from.as_deref() == version {
            return Ok(None);
        }
        // A deletion is checked against the version it unnames as read here: its mark comes off last, after the
        // alias record moved, so the check cannot ride on that write.
        if version.is_none()
            && expected.is_some()
            && let Some(old) = &from
            && let Some(current) = self.get(&ComponentKey::model(name, old.as_str())?).await?
        {
            current.check_revision(expected)?;
        }
        let mut record = AliasMove {
            model: name.to_string(),
            alias: alias.to_string(),
            from,
            to: version.map(str::to_owned),
            at: crate::domain::now(),
            by: by.to_string(),
            rollout: None,
        };
        let reservation = EventDraft::alias_moved(None, &record)?;
        let record = self
            .events
            .recorded_as(reservation, |sequence| {
                let record = &mut record;
                async move {
                    // The previous target is unmarked last, once the alias no longer names it.
                    let target = self
                        .point_alias(
                            name,
                            alias,
                            record.from.as_deref(),
                            version,
                            sequence,
                            expected,
                        )
                        .await?;
                    if let Some(old) = &record.from {
                        match self
                            .mark_alias(
                                &ComponentKey::model(name, old.as_str())?,
                                alias,
                                false,
                                None,
                            )
                            .await
                        {
                            Ok(()) | Err(StoreError::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    record.at = crate::domain::now();
                    let draft = EventDraft::alias_moved(target.as_ref(), record)?;
                    Ok((record.clone(), Some(draft)))
                }
            })
            .await?;
        self.metadata
            .collection::<Document>(ALIAS_HISTORY)
            .insert_one(history_document(&record))
            .await
            .map_err(map_err)?;
        Ok(Some(record))
    }

    async fn resolve_alias(&self, name: &str, alias: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .alias_collection()
            .find_one(doc! { "model_name": name, "alias": alias })
            .await
            .map_err(map_err)?
            .and_then(|d| d.get_str("model_version").ok().map(str::to_owned)))
    }

    async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, StoreError> {
        let documents: Vec<Document> = self
            .metadata
            .collection::<Document>(ALIAS_HISTORY)
            .find(doc! { "model_name": name, "alias": alias })
            .sort(doc! { "at": 1, "_id": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        Ok(documents
            .iter()
            .map(|d| alias_move_of(name, alias, d))
            .collect())
    }

    async fn alias_records(&self) -> Result<Vec<AliasRecord>, StoreError> {
        let mut records: std::collections::BTreeMap<(String, String), AliasRecord> =
            std::collections::BTreeMap::new();
        let mut history = self
            .metadata
            .collection::<Document>(ALIAS_HISTORY)
            .find(doc! {})
            .sort(doc! { "model_name": 1, "alias": 1, "at": 1, "_id": 1 })
            .await
            .map_err(map_err)?;
        while let Some(d) = history.try_next().await.map_err(map_err)? {
            let (model, alias) = (
                d.get_str("model_name").unwrap_or_default(),
                d.get_str("alias").unwrap_or_default(),
            );
            records
                .entry((model.to_string(), alias.to_string()))
                .or_insert_with(|| AliasRecord::empty(model, alias))
                .history
                .push(alias_move_of(model, alias, &d));
        }
        let mut pointers = self
            .alias_collection()
            .find(doc! {})
            .await
            .map_err(map_err)?;
        while let Some(d) = pointers.try_next().await.map_err(map_err)? {
            let (model, alias) = (
                d.get_str("model_name").unwrap_or_default(),
                d.get_str("alias").unwrap_or_default(),
            );
            let Ok(version) = d.get_str("model_version") else {
                continue; // deleted: its history says so
            };
            records
                .entry((model.to_string(), alias.to_string()))
                .or_insert_with(|| AliasRecord::empty(model, alias))
                .version = Some(version.to_string());
        }
        Ok(records.into_values().collect())
    }

    async fn insert_alias(&self, record: AliasRecord) -> Result<(), StoreError> {
        let (name, alias) = (record.model.as_str(), record.alias.as_str());
        if self.alias_known(name, alias).await? {
            return Err(StoreError::Invalid(crate::domain::DomainError::new(
                "alias",
                format!(
                    "alias {alias} of model {name} already exists in the target store: restore only adds"
                ),
            )));
        }
        let moves: Vec<Document> = record
            .history
            .iter()
            .map(|m| {
                history_document(&AliasMove {
                    model: name.to_string(),
                    alias: alias.to_string(),
                    ..m.clone()
                })
            })
            .collect();
        if !moves.is_empty() {
            self.metadata
                .collection::<Document>(ALIAS_HISTORY)
                .insert_many(moves)
                .await
                .map_err(map_err)?;
        }
        let Some(version) = record.version.as_deref() else {
            return Ok(());
        };
        let last = record.last_move();
        self.events
            .recorded_as(EventDraft::alias_moved(None, &last)?, |sequence| {
                let last = &last;
                async move {
                    let target = self
                        .point_alias(name, alias, None, Some(version), sequence, None)
                        .await?;
                    Ok(((), Some(EventDraft::alias_moved(target.as_ref(), last)?)))
                }
            })
            .await
    }

    async fn record_rollout(
        &self,
        name: &str,
        alias: &str,
        outcome: &RolloutOutcome,
        by: &str,
    ) -> Result<(), StoreError> {
        let history = self.alias_history(name, alias).await?;
        if history
            .iter()
            .any(|m| m.rollout.as_ref().is_some_and(|r| r.id == outcome.id))
        {
            return Ok(());
        }
        let at = self.resolve_alias(name, alias).await?;
        let record = AliasMove {
            model: name.to_string(),
            alias: alias.to_string(),
            from: at.clone(),
            to: at,
            at: crate::domain::now(),
            by: by.to_string(),
            rollout: Some(outcome.clone()),
        };
        self.metadata
            .collection::<Document>(ALIAS_HISTORY)
            .insert_one(history_document(&record))
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
