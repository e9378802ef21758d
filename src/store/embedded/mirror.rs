//! What an edge mirror writes into the embedded store: upstream components put as they are, and the mirror's
//! own state (where it follows the upstream's feed), in a table of its own.

use redb::{ReadableDatabase, TableDefinition};

use super::components::{Change, adjust_refs, read_component, write_component};
use super::writer::Applied;
use super::{EmbeddedStore, OrBackend, events, table};
use crate::domain::{Component, ComponentKey, EventDraft, Refusal};
use crate::store::MirrorStore;
use crate::store::{StagedBlob, StagedLocation, StoreError};

/// `state` -> the mirror's state as JSON.
const MIRROR_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("mirror_state");
const STATE: &str = "state";

impl EmbeddedStore {
    pub(super) async fn put_mirrored_component(
        &self,
        key: &ComponentKey,
        component: Option<Component>,
        staged: Vec<StagedBlob>,
    ) -> Result<(), StoreError> {
        let mut placing = Vec::new();
        for blob in staged {
            let (sha256, _, temp) = blob.into_local()?;
            placing.push((sha256, temp));
        }
        let blobs = self.blobs.clone();
        let key = key.clone();
        self.attaching(placing, move |txn| {
            let previous = read_component(txn, &key)?;
            // Everything that can refuse the write is checked before anything is written.
            let (draft, change) = match component {
                None => {
                    let Some(previous) = &previous else {
                        return Ok(Applied::new((), Change::Remove(key)));
                    };
                    if !previous.aliases.is_empty() {
                        return Err(Refusal::Aliased {
                            key,
                            aliases: previous.aliases.iter().cloned().collect(),
                        }
                        .into());
                    }
                    txn.open_table(table(key.kind()))
                        .or_backend()?
                        .remove(key.sort_key().as_str())
                        .or_backend()?;
                    (EventDraft::deleted(previous), Change::Remove(key))
                }
                Some(mut component) => {
                    if component.key != key {
                        return Err(StoreError::Backend(format!(
                            "a mirrored {} was offered for {key}",
                            component.key
                        )));
                    }
                    // The aliases naming this version are the mirror's own records, moved by `move_alias`.
                    component.aliases = previous
                        .as_ref()
                        .map(|p| p.aliases.clone())
                        .unwrap_or_default();
                    for file in component.files_mut() {
                        file.blob_id = file.sha256.clone();
                        // Placed by this write, or held for another component: the writer reclaims blobs only
                        // between batches, on this same thread, so what is here now stays for this commit.
                        let held = blobs.path_of(&file.sha256).is_some_and(|p| p.is_file());
                        if !held {
                            return Err(StoreError::Backend(format!(
                                "the bytes {} of mirrored {key} are not stored",
                                file.sha256
                            )));
                        }
                    }
                    for file in component.files() {
                        adjust_refs(txn, &file.blob_id, 1)?;
                    }
                    let record = write_component(txn, &component)?;
                    let draft = component.mirrored_event(previous.as_ref());
                    (draft, Change::Put(vec![(component, record)]))
                }
            };
            let mut released = Vec::new();
            for file in previous.iter().flat_map(Component::files) {
                adjust_refs(txn, &file.blob_id, -1)?;
                released.push(file.blob_id.clone());
            }
            let sequence = events::append(txn, draft)?;
            Ok(Applied::new((), change).event(sequence).released(released))
        })
        .await
    }

    /// A verified file in the data directory becomes a staged blob as it is: no copy.
    pub(super) fn adopt_verified(
        &self,
        file: tempfile::TempPath,
        sha256: &crate::domain::Sha256,
        size: u64,
    ) -> StagedBlob {
        StagedBlob {
            sha256: sha256.to_string(),
            size,
            location: StagedLocation::File(file),
        }
    }

    pub(super) async fn read_mirror_state(&self) -> Result<Option<serde_json::Value>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().or_backend()?;
            let table = match txn.open_table(MIRROR_STATE) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(StoreError::Backend(e.to_string())),
            };
            let found = table.get(STATE).or_backend()?;
            found
                .map(|v| {
                    serde_json::from_slice(v.value()).map_err(|e| {
                        StoreError::Backend(format!("the mirror's state is damaged: {e}"))
                    })
                })
                .transpose()
        })
        .await
    }

    pub(super) async fn write_mirror_state(
        &self,
        state: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.blocking(move |db| {
            let txn = db.begin_write().or_backend()?;
            txn.open_table(MIRROR_STATE)
                .or_backend()?
                .insert(STATE, bytes.as_slice())
                .or_backend()?;
            txn.commit().or_backend()
        })
        .await
    }
}

#[async_trait::async_trait]
impl MirrorStore for EmbeddedStore {
    async fn put_mirrored(
        &self,
        key: &ComponentKey,
        component: Option<Component>,
        staged: Vec<StagedBlob>,
    ) -> Result<(), StoreError> {
        self.put_mirrored_component(key, component, staged).await
    }
    async fn mirror_state(&self) -> Result<Option<serde_json::Value>, StoreError> {
        self.read_mirror_state().await
    }

    async fn save_mirror_state(&self, state: &serde_json::Value) -> Result<(), StoreError> {
        self.write_mirror_state(state).await
    }
}
