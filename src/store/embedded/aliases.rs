//! Aliases brought over from another store (restore, import): read out with their history, and written back
//! as given, each that names a version with its event, in one transaction.

use std::collections::BTreeMap;

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::components::{Change, read_component, write_component};
use super::writer::Applied;
use super::{ALIAS_HISTORY, ALIASES, EmbeddedStore, OrBackend, events};
use crate::domain::rollout::RolloutOutcome;
use crate::domain::{AliasMove, AliasRecord, ComponentKey, DomainError, EventDraft};
use crate::store::AliasStore;
use crate::store::StoreError;

/// Every alias with a pointer or a history, by model and alias.
pub(super) fn records(db: &Database) -> Result<Vec<AliasRecord>, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let mut records: BTreeMap<(String, String), AliasRecord> = BTreeMap::new();
    // History keys are `model\0alias\0<number>`, in move order.
    for entry in txn
        .open_table(ALIAS_HISTORY)
        .or_backend()?
        .iter()
        .or_backend()?
    {
        let (key, value) = entry.or_backend()?;
        let mut parts = key.value().split('\0');
        let (Some(model), Some(alias)) = (parts.next(), parts.next()) else {
            continue;
        };
        let moved: AliasMove = serde_json::from_slice(value.value())
            .map_err(|e| StoreError::Backend(format!("a stored alias move is damaged: {e}")))?;
        records
            .entry((model.to_string(), alias.to_string()))
            .or_insert_with(|| AliasRecord::empty(model, alias))
            .history
            .push(moved);
    }
    for entry in txn.open_table(ALIASES).or_backend()?.iter().or_backend()? {
        let (key, value) = entry.or_backend()?;
        if let Some((model, alias)) = key.value().split_once('\0') {
            records
                .entry((model.to_string(), alias.to_string()))
                .or_insert_with(|| AliasRecord::empty(model, alias))
                .version = Some(value.value().to_string());
        }
    }
    Ok(records.into_values().collect())
}

/// Writes `record` (refused when the alias is known here) and, when it names a version, marks that version and
/// appends its `ALIAS_SET` event. Returns the event's sequence and what changed, for the catalogue.
pub(super) fn insert(
    txn: &WriteTransaction,
    record: &AliasRecord,
) -> Result<(Option<u64>, Change), StoreError> {
    let slot = format!("{}\0{}", record.model, record.alias);
    let (start, end) = (format!("{slot}\0"), format!("{slot}\u{1}"));
    {
        let known = txn
            .open_table(ALIASES)
            .or_backend()?
            .get(slot.as_str())
            .or_backend()?
            .is_some()
            || txn
                .open_table(ALIAS_HISTORY)
                .or_backend()?
                .range(start.as_str()..end.as_str())
                .or_backend()?
                .next()
                .is_some();
        if known {
            return Err(StoreError::Invalid(DomainError::new(
                "alias",
                format!(
                    "alias {} of model {} already exists in the target store: restore only adds",
                    record.alias, record.model
                ),
            )));
        }
    }
    // Everything that can refuse the record is checked (and its event drawn up) before anything is written.
    let target = match &record.version {
        Some(version) => {
            let key = ComponentKey::model(record.model.clone(), version.clone())?;
            let found =
                read_component(txn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            let target = found.with_alias_mark(&record.alias, true).unwrap_or(found);
            let draft = EventDraft::alias_moved(Some(&target), &record.last_move())?;
            Some((version, target, draft))
        }
        None => None,
    };
    {
        let mut history = txn.open_table(ALIAS_HISTORY).or_backend()?;
        for (n, moved) in record.history.iter().enumerate() {
            let json = serde_json::to_vec(moved)
                .map_err(|e| StoreError::Backend(format!("encoding an alias move: {e}")))?;
            history
                .insert(format!("{start}{n:020}").as_str(), json.as_slice())
                .or_backend()?;
        }
    }
    let Some((version, target, draft)) = target else {
        return Ok((None, Change::Put(Vec::new())));
    };
    let written = write_component(txn, &target)?;
    txn.open_table(ALIASES)
        .or_backend()?
        .insert(slot.as_str(), version.as_str())
        .or_backend()?;
    let sequence = events::append(txn, draft)?;
    Ok((Some(sequence), Change::Put(vec![(target, written)])))
}

/// Appends `record` to the history of the alias of `slot` (`model\0alias`), after its last move.
fn append_history(
    txn: &WriteTransaction,
    slot: &str,
    record: &AliasMove,
) -> Result<(), StoreError> {
    let mut history = txn.open_table(ALIAS_HISTORY).or_backend()?;
    let (start, end) = (format!("{slot}\0"), format!("{slot}\u{1}"));
    let last = history
        .range(start.as_str()..end.as_str())
        .or_backend()?
        .next_back()
        .transpose()
        .or_backend()?
        .and_then(|(k, _)| k.value().rsplit('\0').next()?.parse::<u64>().ok());
    let entry = format!("{start}{:020}", last.map_or(0, |n| n + 1));
    let json = serde_json::to_vec(record)
        .map_err(|e| StoreError::Backend(format!("encoding an alias move: {e}")))?;
    history
        .insert(entry.as_str(), json.as_slice())
        .or_backend()?;
    Ok(())
}

#[async_trait::async_trait]
impl AliasStore for EmbeddedStore {
    async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        version: Option<&str>,
        by: &str,
        expected: Option<u64>,
    ) -> Result<Option<AliasMove>, StoreError> {
        let (name, alias, by) = (name.to_string(), alias.to_string(), by.to_string());
        let version = version.map(str::to_string);
        self.writer
            .write(Vec::new(), move |txn| {
                let slot = format!("{name}\0{alias}");
                let from = {
                    let aliases = txn.open_table(ALIASES).or_backend()?;
                    let found = aliases.get(slot.as_str()).or_backend()?;
                    found.map(|v| v.value().to_string())
                };
                if from == version {
                    return Ok(Applied::new(None, Change::Put(Vec::new())));
                }
                // Everything that can refuse the move is read (and its event drawn up) before anything is written.
                let target = match &version {
                    Some(to) => {
                        let key = ComponentKey::model(name.clone(), to.clone())?;
                        let found = read_component(txn, &key)?.ok_or(StoreError::NotFound(key))?;
                        found.check_revision(expected)?;
                        Some(found.with_alias_mark(&alias, true).unwrap_or(found))
                    }
                    None => None,
                };
                let previous = match &from {
                    Some(old) => {
                        read_component(txn, &ComponentKey::model(name.clone(), old.clone())?)?
                    }
                    None => None,
                };
                if version.is_none()
                    && let Some(previous) = &previous
                {
                    previous.check_revision(expected)?;
                }
                let record = AliasMove {
                    model: name,
                    alias: alias.clone(),
                    from,
                    to: version.clone(),
                    at: crate::domain::now(),
                    by,
                    rollout: None,
                };
                let draft = EventDraft::alias_moved(target.as_ref(), &record)?;
                let mut changed = Vec::new();
                if let Some(target) = target {
                    let written = write_component(txn, &target)?;
                    changed.push((target, written));
                }
                if let Some(previous) = previous.and_then(|p| p.with_alias_mark(&alias, false)) {
                    let written = write_component(txn, &previous)?;
                    changed.push((previous, written));
                }
                {
                    let mut aliases = txn.open_table(ALIASES).or_backend()?;
                    match &version {
                        Some(to) => aliases.insert(slot.as_str(), to.as_str()).or_backend()?,
                        None => aliases.remove(slot.as_str()).or_backend()?,
                    };
                }
                append_history(txn, &slot, &record)?;
                let sequence = events::append(txn, draft)?;
                Ok(Applied::new(Some(record), Change::Put(changed)).event(sequence))
            })
            .await
    }

    async fn resolve_alias(&self, name: &str, alias: &str) -> Result<Option<String>, StoreError> {
        let slot = format!("{name}\0{alias}");
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let aliases = txn.open_table(ALIASES).or_backend()?;
            let found = aliases.get(slot.as_str()).or_backend()?;
            Ok(found.map(|v| v.value().to_string()))
        })
        .await
    }

    async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, StoreError> {
        let slot = format!("{name}\0{alias}");
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let history = txn.open_table(ALIAS_HISTORY).or_backend()?;
            let (start, end) = (format!("{slot}\0"), format!("{slot}\u{1}"));
            let mut moves = Vec::new();
            for entry in history.range(start.as_str()..end.as_str()).or_backend()? {
                let (_, value) = entry.or_backend()?;
                moves.push(serde_json::from_slice(value.value()).map_err(|e| {
                    StoreError::Backend(format!("a stored alias move is damaged: {e}"))
                })?);
            }
            Ok(moves)
        })
        .await
    }

    async fn alias_records(&self) -> Result<Vec<AliasRecord>, StoreError> {
        self.blocking(records).await
    }

    async fn insert_alias(&self, record: AliasRecord) -> Result<(), StoreError> {
        self.writer
            .write(Vec::new(), move |txn| {
                let (sequence, change) = insert(txn, &record)?;
                let applied = Applied::new((), change);
                Ok(match sequence {
                    Some(sequence) => applied.event(sequence),
                    None => applied,
                })
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
        let (name, alias, by, outcome) = (
            name.to_string(),
            alias.to_string(),
            by.to_string(),
            outcome.clone(),
        );
        self.writer
            .write(Vec::new(), move |txn| {
                let slot = format!("{name}\0{alias}");
                let (start, end) = (format!("{slot}\0"), format!("{slot}\u{1}"));
                let recorded = txn
                    .open_table(ALIAS_HISTORY)
                    .or_backend()?
                    .range(start.as_str()..end.as_str())
                    .or_backend()?
                    .filter_map(Result::ok)
                    .filter_map(|(_, v)| serde_json::from_slice::<AliasMove>(v.value()).ok())
                    .any(|m| m.rollout.is_some_and(|r| r.id == outcome.id));
                if !recorded {
                    let at = txn
                        .open_table(ALIASES)
                        .or_backend()?
                        .get(slot.as_str())
                        .or_backend()?
                        .map(|v| v.value().to_string());
                    let record = AliasMove {
                        model: name,
                        alias,
                        from: at.clone(),
                        to: at,
                        at: crate::domain::now(),
                        by,
                        rollout: Some(outcome),
                    };
                    append_history(txn, &slot, &record)?;
                }
                Ok(Applied::new((), Change::Put(Vec::new())))
            })
            .await
    }
}
