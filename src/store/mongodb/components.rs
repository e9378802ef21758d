//! Components in MongoDB. Every write is one read-decide-write step ([`MongoStore::modify`]): read the document,
//! let the domain decide ([`Component::put_file`], [`Component::apply_update`], [`Component::lock`]), then `$set`
//! only the fields that changed, guarded by the revision read, so fields the original service wrote survive and a
//! concurrent change makes the step read and decide again. Deletion is the same loop with `find_one_and_delete`.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};

use super::documents::{
    Decoded, changed_fields, from_document, grid_filename, key_filter, revision_guard, to_document,
};
use super::events::{first_sequence, record_sequence};
use super::gridfs::Grid;
use super::legacy::legacy_stored_file;
use super::query::{self, Pushdown, and, pushdown, sort_order};
use super::{
    MongoStore, SCAN_BATCH, UPDATE_ATTEMPTS, blob_object_id, is_duplicate_key, map_err,
    staged_grid_file,
};
use crate::domain::{
    Component, ComponentFilter, ComponentKey, EventDraft, EventType, FilePolicy, Kind, ModelKey,
    StoredFile,
};
use crate::store::{
    ComponentStore, ComponentStream, FileMeta, Page, PageRequest, SpecUpdate, StagedBlob,
    StagedFiles, StoreError,
};

/// What a decision made of a component: nothing (it stays as it is), or the component after the write.
pub(super) enum Decision<T> {
    Unchanged(Component),
    Write { after: Component, answer: T },
}

impl Decision<EventDraft> {
    /// The component after the decision, and the event to record: none when nothing changed.
    fn recorded(self) -> (Component, Option<EventDraft>) {
        match self {
            Decision::Write { after, answer } => (after, Some(answer)),
            Decision::Unchanged(same) => (same, None),
        }
    }
}

impl MongoStore {
    /// The read-decide-write step of every change to a component: reads it, lets `decide` rule on it and writes
    /// the fields that changed together with the event's `sequence` (if the write has an event), guarded by the revision read. A concurrent
    /// change in between makes the guard miss, and the step reads and decides again. Returns what `decide`
    /// answered.
    pub(super) async fn modify<T>(
        &self,
        key: &ComponentKey,
        sequence: Option<i64>,
        decide: impl Fn(&Component) -> Result<Decision<T>, StoreError>,
    ) -> Result<Decision<T>, StoreError> {
        let collection = self.collection(key.kind());
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(Decoded { component, rev, .. }) = self.find_one(key).await? else {
                return Err(StoreError::NotFound(key.clone()));
            };
            let (after, answer) = match decide(&component)? {
                Decision::Unchanged(same) => return Ok(Decision::Unchanged(same)),
                Decision::Write { after, answer } => (after, answer),
            };
            let mut set = changed_fields(&component, &after)?;
            set.insert("rev", rev.unwrap_or(0) + 1);
            let mut update = doc! { "$set": set };
            if let Some(sequence) = sequence {
                update.insert("$push", record_sequence(sequence));
            }
            let result = collection
                .update_one(revision_guard(key, rev), update)
                .await
                .map_err(map_err)?;
            if result.matched_count == 1 {
                return Ok(Decision::Write { after, answer });
            }
        }
        Err(StoreError::Contended(format!(
            "{key} kept changing under {UPDATE_ATTEMPTS} attempts to write it; try again"
        )))
    }

    /// Decodes documents and fills in, with one GridFS query, the files that the original service referenced
    /// without our record of them.
    pub(super) async fn decode_all(
        &self,
        kind: Kind,
        documents: &[Document],
    ) -> Result<Vec<Decoded>, StoreError> {
        decode_with_files(&self.grid, kind, documents).await
    }

    pub(super) async fn find_one(&self, key: &ComponentKey) -> Result<Option<Decoded>, StoreError> {
        let found = self
            .collection(key.kind())
            .find_one(key_filter(key))
            .await
            .map_err(map_err)?;
        match found {
            Some(document) => Ok(self.decode_all(key.kind(), &[document]).await?.pop()),
            None => Ok(None),
        }
    }

    async fn collect_page(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: &PageRequest,
    ) -> Result<Page, StoreError> {
        let Pushdown { query, exact } = pushdown(kind, filter);
        let page_query = match &page.after {
            Some(after) => and(vec![
                query.clone(),
                query::after(&ComponentKey::from_sort_key(kind, after)?),
            ]),
            None => query.clone(),
        };
        let collection = self.collection(kind);
        let wanted = page.limit + 1;
        let mut find = collection.find(page_query).sort(sort_order(kind));
        if exact {
            find = find.limit(wanted as i64);
        }
        let mut cursor = find.await.map_err(map_err)?;
        let mut documents = Vec::with_capacity(wanted);
        let mut items = Vec::with_capacity(wanted);
        let mut matcher = filter.matcher();
        // Inexact queries return candidates: keep reading until a page of real matches is found.
        while items.len() < wanted {
            documents.clear();
            while documents.len() < wanted {
                match cursor.try_next().await.map_err(map_err)? {
                    Some(document) => documents.push(document),
                    None => break,
                }
            }
            let exhausted = documents.len() < wanted;
            for decoded in self.decode_all(kind, &documents).await? {
                if (exact || matcher.matches(&decoded.component)) && items.len() < wanted {
                    items.push(decoded.component);
                }
            }
            if exhausted {
                break;
            }
        }
        let has_next = items.len() > page.limit;
        items.truncate(page.limit);
        let total = match (page.count, exact) {
            (false, _) => None,
            (true, true) => Some(collection.count_documents(query).await.map_err(map_err)?),
            (true, false) => Some(self.count_matches(kind, &collection, query, filter).await?),
        };
        Ok(Page {
            items,
            has_next,
            total,
        })
    }

    /// Counts candidates that really match, streaming them: nothing is collected.
    async fn count_matches(
        &self,
        kind: Kind,
        collection: &Collection<Document>,
        query: Document,
        filter: &ComponentFilter,
    ) -> Result<u64, StoreError> {
        let mut cursor = collection.find(query).await.map_err(map_err)?;
        let mut total = 0;
        let mut matcher = filter.matcher();
        while let Some(document) = cursor.try_next().await.map_err(map_err)? {
            if matcher.matches(&from_document(kind, &document)?.component) {
                total += 1;
            }
        }
        Ok(total)
    }
}

/// Decodes documents and fills in, with one GridFS query, the files that the original service referenced
/// without our record of them.
async fn decode_with_files(
    grid: &Grid,
    kind: Kind,
    documents: &[Document],
) -> Result<Vec<Decoded>, StoreError> {
    {
        let mut decoded = documents
            .iter()
            .map(|d| from_document(kind, d))
            .collect::<Result<Vec<_>, _>>()?;
        let legacy: Vec<ObjectId> = decoded.iter().filter_map(|d| d.legacy_file).collect();
        if !legacy.is_empty() {
            let files = grid.files_by_id(&legacy).await?;
            for item in &mut decoded {
                let Some(id) = item.legacy_file else { continue };
                let Some(file) = files
                    .iter()
                    .find(|f| f.get_object_id("_id").ok() == Some(id))
                else {
                    continue;
                };
                item.component.file = Some(legacy_stored_file(id, file));
            }
        }
        Ok(decoded)
    }
}

#[async_trait::async_trait]
impl ComponentStore for MongoStore {
    async fn insert(&self, component: Component) -> Result<(), StoreError> {
        self.ensure_indexes().await?;
        let mut document = to_document(&component)?;
        let collection = self.collection(component.kind());
        let key = component.key.clone();
        self.events
            .recorded(EventType::Created, &key, |sequence| async move {
                let (field, value) = first_sequence(sequence);
                document.insert(field, value);
                match collection.insert_one(document).await {
                    Ok(_) => Ok(((), Some(EventDraft::created(&component)))),
                    Err(e) if is_duplicate_key(&e) => Err(StoreError::AlreadyExists(component.key)),
                    Err(e) => Err(map_err(e)),
                }
            })
            .await
    }

    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        Ok(self.find_one(key).await?.map(|d| d.component))
    }

    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: HashSet<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        let versions: HashSet<&str> = keys.iter().map(|k| k.version.as_str()).collect();
        let documents: Vec<Document> = self
            .collection(Kind::Model)
            .find(doc! {
                "model_name": { "$in": names.into_iter().collect::<Vec<_>>() },
                "model_version": { "$in": versions.into_iter().collect::<Vec<_>>() },
            })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let wanted: HashSet<&ModelKey> = keys.iter().collect();
        Ok(self
            .decode_all(Kind::Model, &documents)
            .await?
            .into_iter()
            .map(|d| d.component)
            .filter(|c| matches!(&c.key, ComponentKey::Model(m) if wanted.contains(m)))
            .collect())
    }

    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        self.collect_page(kind, filter, &page).await
    }

    async fn scan(&self, kind: Kind) -> Result<ComponentStream, StoreError> {
        let cursor = self
            .collection(kind)
            .find(Document::new())
            .sort(sort_order(kind))
            .await
            .map_err(map_err)?;
        let grid = self.grid.clone();
        // One cursor, decoded a batch at a time (files written by the original are looked up per batch).
        let batches = futures_util::stream::try_unfold(
            (cursor, grid),
            move |(mut cursor, grid)| async move {
                let mut documents = Vec::with_capacity(SCAN_BATCH);
                while documents.len() < SCAN_BATCH {
                    match cursor.try_next().await.map_err(map_err)? {
                        Some(document) => documents.push(document),
                        None => break,
                    }
                }
                if documents.is_empty() {
                    return Ok::<_, StoreError>(None);
                }
                let decoded = decode_with_files(&grid, kind, &documents).await?;
                Ok(Some((decoded, (cursor, grid))))
            },
        );
        Ok(Box::pin(
            batches
                .map_ok(|decoded| {
                    futures_util::stream::iter(decoded.into_iter().map(|d| Ok(d.component)))
                })
                .try_flatten(),
        ))
    }

    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
        expected: Option<u64>,
    ) -> Result<Component, StoreError> {
        let now = crate::domain::now();
        self.events
            .recorded(EventType::Updated, key, |sequence| async move {
                let decision = self
                    .modify(key, Some(sequence), |before| {
                        let updated = before.apply_update(&update, expected, now)?;
                        Ok(Decision::Write {
                            after: updated.component,
                            answer: updated.event,
                        })
                    })
                    .await?;
                Ok(decision.recorded())
            })
            .await
    }

    async fn delete(
        &self,
        key: &ComponentKey,
        policy: FilePolicy,
    ) -> Result<Option<Component>, StoreError> {
        let collection = self.collection(key.kind());
        let removed = self
            .events
            .recorded(EventType::Deleted, key, |_| async move {
                for _ in 0..UPDATE_ATTEMPTS {
                    let Some(Decoded { component, rev, .. }) = self.find_one(key).await? else {
                        return Ok((None, None));
                    };
                    // A version's own marks may be stale (a move that stopped half-way): the alias records say
                    // which aliases name it.
                    let naming = if component.aliases.is_empty() {
                        Vec::new()
                    } else {
                        self.aliases_naming(key).await?
                    };
                    let deletion = component.deletion(policy, naming)?;
                    // The revision guard makes the decision hold for what is deleted: an alias mark, a lock or an
                    // upload in between changes the revision, and the delete is decided again on the fresh
                    // document.
                    let Some(document) = collection
                        .find_one_and_delete(revision_guard(key, rev))
                        .await
                        .map_err(map_err)?
                    else {
                        continue;
                    };
                    let decoded = self.decode_all(key.kind(), &[document]).await;
                    // The deletion happened even if the document cannot be read back: announce it regardless.
                    let (component, event) = match decoded.map(|mut d| d.pop()) {
                        Ok(Some(d)) => (d.component, deletion.event),
                        Ok(None) | Err(_) => {
                            (component, EventDraft::bare(EventType::Deleted, key.clone()))
                        }
                    };
                    return Ok((Some(component), Some(event)));
                }
                Err(StoreError::Contended(format!(
                    "{key} kept changing under {UPDATE_ATTEMPTS} delete attempts; try again"
                )))
            })
            .await?;
        let component: Option<Component> = removed;
        for file in component.iter().flat_map(Component::files) {
            self.grid.supersede(blob_object_id(file)?).await;
        }
        Ok(component)
    }

    async fn lock(
        &self,
        key: &ComponentKey,
        expected: Option<u64>,
    ) -> Result<Component, StoreError> {
        // Locked already: nothing changes, so nothing goes on the feed.
        let decide: crate::store::Decide = Box::new(move |component| Ok(component.lock(expected)?));
        self.change(key, EventType::Locked, decide).await
    }

    async fn change(
        &self,
        key: &ComponentKey,
        event_type: EventType,
        decide: crate::store::Decide,
    ) -> Result<Component, StoreError> {
        self.events
            .recorded(event_type, key, |sequence| async move {
                let decision = self
                    .modify(key, Some(sequence), |component| {
                        Ok(match decide(component)? {
                            Some((after, event)) => Decision::Write {
                                after,
                                answer: event,
                            },
                            None => Decision::Unchanged(component.clone()),
                        })
                    })
                    .await?;
                Ok(decision.recorded())
            })
            .await
    }

    async fn attach(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        meta: FileMeta,
    ) -> Result<Component, StoreError> {
        let (sha256, size, blob, id) = staged_grid_file(staged)?;
        let now = crate::domain::now();
        let file = StoredFile {
            blob_id: id.to_hex(),
            size,
            sha256: sha256.clone(),
            content_type: meta.content_type.clone(),
            filename: meta.filename.clone(),
            uploaded_at: now,
            signatures: Vec::new(),
        };
        self.grid
            .label(
                id,
                &grid_filename(key),
                doc! {
                    "sha256": &sha256,
                    "content_type": &meta.content_type,
                    "original_filename": &meta.filename,
                },
            )
            .await?;
        let (platform, needs, policy, expected) = (
            &meta.platform,
            &meta.needs,
            meta.policy,
            meta.expected_revision,
        );
        let file = &file;
        let put = self
            .events
            .recorded(EventType::FileUploaded, key, |sequence| async move {
                let decision = self
                    .modify(key, Some(sequence), |component| {
                        let put = component.put_file(
                            platform.clone(),
                            needs.clone(),
                            file.clone(),
                            policy,
                            expected,
                            now,
                        )?;
                        Ok(Decision::Write {
                            after: put.component,
                            answer: (put.replaced, put.event),
                        })
                    })
                    .await?;
                match decision {
                    Decision::Write {
                        after,
                        answer: (replaced, event),
                    } => Ok(((after, replaced), Some(event))),
                    Decision::Unchanged(_) => Err(StoreError::Backend(format!(
                        "a file put into {key} changed nothing"
                    ))),
                }
            })
            .await;
        // On an error `blob` is dropped here, which deletes the upload: no component refers to it.
        let (component, replaced) = put?;
        blob.keep();
        if let Some(old) = replaced
            && old.blob_id != file.blob_id
        {
            self.grid.supersede(blob_object_id(&old)?).await;
        }
        Ok(component)
    }

    async fn insert_with_files(
        &self,
        mut component: Component,
        files: StagedFiles,
    ) -> Result<(), StoreError> {
        self.ensure_indexes().await?;
        files.check(&component)?;
        let mut blobs = Vec::new();
        let mut ids = Vec::new();
        for staged in files.default.into_iter().chain(files.variants) {
            let (_, _, blob, id) = staged_grid_file(staged)?;
            blobs.push(blob);
            ids.push(id);
        }
        // The records point at this store's GridFS files, in the order they were staged (`check` made sure
        // there is one record per staged blob).
        let grid_name = grid_filename(&component.key);
        for (file, id) in component.files_mut().zip(&ids) {
            file.blob_id = id.to_hex();
            self.grid
                .label(
                    *id,
                    &grid_name,
                    doc! {
                        "sha256": &file.sha256,
                        "content_type": &file.content_type,
                        "original_filename": &file.filename,
                    },
                )
                .await?;
        }
        // Aliases come over with their own records.
        component.aliases.clear();
        let mut document = to_document(&component)?;
        let collection = self.collection(component.kind());
        let key = component.key.clone();
        self.events
            .recorded(EventType::Created, &key, |sequence| async move {
                let (field, value) = first_sequence(sequence);
                document.insert(field, value);
                match collection.insert_one(document).await {
                    Ok(_) => {
                        for blob in blobs {
                            blob.keep();
                        }
                        Ok(((), Some(EventDraft::created(&component))))
                    }
                    // Dropping `blobs` deletes the uploads: nothing refers to them.
                    Err(e) if is_duplicate_key(&e) => Err(StoreError::AlreadyExists(component.key)),
                    Err(e) => Err(map_err(e)),
                }
            })
            .await
    }
}
