//! Components in redb: every write is one read-decide-write step in the writer's transaction. The domain
//! decides ([`Component::put_file`], [`Component::apply_update`], [`Component::deletion`], [`Component::lock`]);
//! [`commit`] writes what it decided, counts blob references and appends the event, all in that transaction.

use std::sync::Arc;

use async_trait::async_trait;
use redb::{ReadableTable, WriteTransaction};

use super::catalog::Snapshot;
use super::writer::Applied;
use super::{BLOB_REFS, EmbeddedStore, OrBackend, SCAN_STEP, decode, encode, events, table};
use crate::domain::{
    Component, ComponentFilter, ComponentKey, EventDraft, FilePolicy, Kind, ModelKey, StoredFile,
};
use crate::store::{
    ComponentStore, ComponentStream, FileMeta, Page, PageRequest, SpecUpdate, StagedBlob,
    StagedFiles, StoreError,
};

/// A write the domain decided, for the writer's transaction to commit.
struct Decided<T> {
    answer: T,
    /// The component as it is to be stored; `None` removes it.
    after: Option<Component>,
    event: Option<EventDraft>,
    /// The blob the component now refers to besides those it kept.
    added: Option<String>,
    /// Files the component no longer refers to.
    released: Vec<StoredFile>,
}

impl<T> Decided<T> {
    fn put(answer: T, after: Component, event: EventDraft) -> Self {
        Self {
            answer,
            after: Some(after),
            event: Some(event),
            added: None,
            released: Vec::new(),
        }
    }
}

/// Commits a decision about `key`: the record, the reference counts and the event, in `txn`.
fn commit<T>(
    txn: &WriteTransaction,
    key: &ComponentKey,
    decided: Decided<T>,
) -> Result<Applied<T>, StoreError> {
    let change = match &decided.after {
        Some(component) => {
            let record = write_component(txn, component)?;
            Change::Put(vec![(component.clone(), record)])
        }
        None => {
            txn.open_table(table(key.kind()))
                .or_backend()?
                .remove(key.sort_key().as_str())
                .or_backend()?;
            Change::Remove(key.clone())
        }
    };
    if let Some(added) = &decided.added {
        adjust_refs(txn, added, 1)?;
    }
    for file in &decided.released {
        adjust_refs(txn, &file.blob_id, -1)?;
    }
    let mut applied = Applied::new(decided.answer, change)
        .released(decided.released.into_iter().map(|f| f.blob_id));
    if let Some(event) = decided.event {
        applied = applied.event(events::append(txn, event)?);
    }
    Ok(applied)
}

impl EmbeddedStore {
    /// The one read-decide-write step: reads the component in the writer's transaction, lets `decide` rule, and
    /// commits its decision there; `staged` blobs are placed first (see [`EmbeddedStore::attaching`]). `None`
    /// from `decide` changes nothing.
    async fn modify<T: Send + 'static>(
        &self,
        key: &ComponentKey,
        staged: Vec<(String, crate::store::LocalBlob)>,
        decide: impl FnOnce(Component) -> Result<Result<Decided<T>, T>, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let key = key.clone();
        let work = move |txn: &WriteTransaction| {
            let component =
                read_component(txn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            match decide(component)? {
                Ok(decided) => commit(txn, &key, decided),
                Err(unchanged) => Ok(Applied::new(unchanged, Change::Put(Vec::new()))),
            }
        };
        if staged.is_empty() {
            self.writer.write(Vec::new(), work).await
        } else {
            self.attaching(staged, work).await
        }
    }

    /// Inserts many new components in one transaction, for bulk loading (the catalogue benchmark): all or none,
    /// [`StoreError::AlreadyExists`] when a key is taken.
    pub async fn insert_many(&self, components: Vec<Component>) -> Result<(), StoreError> {
        self.writer
            .write(Vec::new(), move |txn| {
                // Every key is checked before anything is written, repeats within the batch included.
                let mut keys = std::collections::HashSet::new();
                for component in &components {
                    let fresh = keys.insert((component.kind(), component.key.sort_key()));
                    if !fresh || read_component(txn, &component.key)?.is_some() {
                        return Err(StoreError::AlreadyExists(component.key.clone()));
                    }
                }
                let mut puts = Vec::with_capacity(components.len());
                let mut last = None;
                for component in components {
                    let record = write_component(txn, &component)?;
                    last = Some(events::append(txn, EventDraft::created(&component))?);
                    puts.push((component, record));
                }
                let applied = Applied::new((), Change::Put(puts));
                Ok(match last {
                    Some(sequence) => applied.event(sequence),
                    None => applied,
                })
            })
            .await
    }
}

/// What a committed write changed, for the catalogue: components put, with their records as written.
pub(super) enum Change {
    Put(Vec<(Component, Vec<u8>)>),
    Remove(ComponentKey),
}

impl Change {
    pub(super) fn apply_to(self, snapshot: &mut Snapshot) {
        match self {
            Change::Put(puts) => {
                for (component, record) in puts {
                    snapshot.insert(
                        &component.key,
                        component.spec.needs(),
                        crate::domain::has_file_needs(&component),
                        record.into(),
                    );
                }
            }
            Change::Remove(key) => snapshot.remove(&key),
        }
    }
}

/// Adds `delta` to the reference count of a blob, dropping the entry at zero.
pub(super) fn adjust_refs(
    txn: &WriteTransaction,
    digest: &str,
    delta: i64,
) -> Result<(), StoreError> {
    let mut refs = txn.open_table(BLOB_REFS).or_backend()?;
    let current = refs
        .get(digest)
        .or_backend()?
        .map(|v| v.value())
        .unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    if next == 0 {
        refs.remove(digest).or_backend()?;
    } else {
        refs.insert(digest, next).or_backend()?;
    }
    Ok(())
}

pub(super) fn read_component(
    txn: &WriteTransaction,
    key: &ComponentKey,
) -> Result<Option<Component>, StoreError> {
    let table = txn.open_table(table(key.kind())).or_backend()?;
    let found = table.get(key.sort_key().as_str()).or_backend()?;
    found.map(|v| decode(v.value())).transpose()
}

/// Writes a component's record and returns it, for the catalogue.
pub(super) fn write_component(
    txn: &WriteTransaction,
    component: &Component,
) -> Result<Vec<u8>, StoreError> {
    let mut table = txn.open_table(table(component.kind())).or_backend()?;
    let record = encode(component)?;
    table
        .insert(component.key.sort_key().as_str(), record.as_slice())
        .or_backend()?;
    Ok(record)
}

#[async_trait]
impl ComponentStore for EmbeddedStore {
    async fn insert(&self, component: Component) -> Result<(), StoreError> {
        self.writer
            .write(Vec::new(), move |txn| {
                if read_component(txn, &component.key)?.is_some() {
                    return Err(StoreError::AlreadyExists(component.key));
                }
                let record = write_component(txn, &component)?;
                let sequence = events::append(txn, EventDraft::created(&component))?;
                Ok(Applied::new((), Change::Put(vec![(component, record)])).event(sequence))
            })
            .await
    }

    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        let snapshot = self.snapshot().await?;
        snapshot.get(key)
    }

    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError> {
        let snapshot = self.snapshot().await?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.extend(snapshot.get(&ComponentKey::Model(key.clone()))?);
        }
        Ok(found)
    }

    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        let snapshot = self.snapshot().await?;
        snapshot.list(kind, filter, &page)
    }

    async fn scan(&self, kind: Kind) -> Result<ComponentStream, StoreError> {
        let snapshot = self.snapshot().await?;
        // One snapshot for the whole scan: the list is one consistent state however long the client takes.
        let steps = futures_util::stream::unfold(
            (snapshot, None::<Arc<str>>, false),
            move |(snapshot, after, done)| async move {
                if done {
                    return None;
                }
                let chunk = snapshot.range(kind, after.as_deref(), SCAN_STEP);
                let done = chunk.len() < SCAN_STEP;
                let after = chunk.last().map(|(key, _)| key.clone());
                Some((chunk, (snapshot, after, done)))
            },
        );
        Ok(Box::pin(futures_util::StreamExt::flat_map(
            steps,
            |chunk| futures_util::stream::iter(chunk.into_iter().map(|(_, item)| item.component())),
        )))
    }

    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
        expected: Option<u64>,
    ) -> Result<Component, StoreError> {
        let now = crate::domain::now();
        self.modify(key, Vec::new(), move |before| {
            let updated = before.apply_update(&update, expected, now)?;
            Ok(Ok(Decided::put(
                updated.component.clone(),
                updated.component,
                updated.event,
            )))
        })
        .await
    }

    async fn delete(
        &self,
        key: &ComponentKey,
        policy: FilePolicy,
    ) -> Result<Option<Component>, StoreError> {
        let deleted = self
            .modify(key, Vec::new(), move |component| {
                // The alias marks are written in the same transactions as the aliases: they are the truth here.
                let naming = component.aliases.iter().cloned().collect();
                let deletion = component.deletion(policy, naming)?;
                Ok(Ok(Decided {
                    answer: Some(component),
                    after: None,
                    event: Some(deletion.event),
                    added: None,
                    released: deletion.released,
                }))
            })
            .await;
        match deleted {
            Err(StoreError::NotFound(missing)) if &missing == key => Ok(None),
            other => other,
        }
    }

    async fn lock(
        &self,
        key: &ComponentKey,
        expected: Option<u64>,
    ) -> Result<Component, StoreError> {
        let decide: crate::store::Decide = Box::new(move |component| Ok(component.lock(expected)?));
        self.change(key, crate::domain::EventType::Locked, decide)
            .await
    }

    async fn change(
        &self,
        key: &ComponentKey,
        _event_type: crate::domain::EventType,
        decide: crate::store::Decide,
    ) -> Result<Component, StoreError> {
        self.modify(key, Vec::new(), move |component| {
            Ok(match decide(&component)? {
                Some((after, event)) => Ok(Decided::put(after.clone(), after, event)),
                None => Err(component),
            })
        })
        .await
    }

    async fn attach(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        meta: FileMeta,
    ) -> Result<Component, StoreError> {
        let (sha256, size, temp) = staged.into_local()?;
        let now = crate::domain::now();
        let file = StoredFile {
            blob_id: sha256.clone(),
            size,
            sha256: sha256.clone(),
            content_type: meta.content_type,
            filename: meta.filename,
            uploaded_at: now,
            signatures: Vec::new(),
        };
        let (platform, needs, policy, expected) = (
            meta.platform,
            meta.needs,
            meta.policy,
            meta.expected_revision,
        );
        self.modify(key, vec![(sha256.clone(), temp)], move |component| {
            let put = component.put_file(platform, needs, file, policy, expected, now)?;
            Ok(Ok(Decided {
                answer: put.component.clone(),
                after: Some(put.component),
                event: Some(put.event),
                added: Some(sha256),
                released: put.replaced.into_iter().collect(),
            }))
        })
        .await
    }

    async fn insert_with_files(
        &self,
        mut component: Component,
        files: StagedFiles,
    ) -> Result<(), StoreError> {
        files.check(&component)?;
        let mut temps = Vec::new();
        for staged in files.default.into_iter().chain(files.variants) {
            let (sha256, _, temp) = staged.into_local()?;
            temps.push((sha256, temp));
        }
        // This store names blobs by their sha256; aliases come with their own records.
        for file in component.files_mut() {
            file.blob_id = file.sha256.clone();
        }
        component.aliases.clear();
        let digests: Vec<String> = temps.iter().map(|(sha256, _)| sha256.clone()).collect();
        self.attaching(temps, move |txn| {
            if read_component(txn, &component.key)?.is_some() {
                return Err(StoreError::AlreadyExists(component.key));
            }
            for digest in &digests {
                adjust_refs(txn, digest, 1)?;
            }
            let record = write_component(txn, &component)?;
            let sequence = events::append(txn, EventDraft::created(&component))?;
            Ok(Applied::new((), Change::Put(vec![(component, record)])).event(sequence))
        })
        .await
    }
}
