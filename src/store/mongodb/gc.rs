//! Garbage collection of GridFS: files no component refers to (uploads never attached, files replaced or deleted)
//! and chunks of uploads that never finished, each once its grace period is over.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::Database;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};

use super::documents::{collection_name, file_ref_field};
use super::{MongoStore, map_err};
use crate::domain::Kind;
use crate::store::{GcReport, StoreError};

impl MongoStore {
    /// Removes GridFS files (and stray chunks) that no component refers to and that are older than `grace`, so
    /// that uploads still in flight or just staged are never collected; a replaced or deleted file goes once it
    /// has been superseded for longer than `grace`, so that downloads begun before are never cut.
    pub(super) async fn collect_garbage_now(
        &self,
        grace: Duration,
    ) -> Result<GcReport, StoreError> {
        let (grid, metadata) = (&self.grid, &self.metadata);
        let cutoff = BsonDateTime::from_millis(
            BsonDateTime::now().timestamp_millis() - grace.as_millis() as i64,
        );
        // Read the cut-off files first and the references second: a file attached in between is then seen as
        // referenced.
        // Unreferenced files go once uploaded before the cut-off, unless they stopped being a component's file
        // after it; replaced and deleted files go once superseded before it, however recent their upload.
        let mut superseded_recently = HashSet::new();
        let mut candidates = HashSet::new();
        let mut records = grid.superseded.find(doc! {}).await.map_err(map_err)?;
        while let Some(record) = records.try_next().await.map_err(map_err)? {
            let (Ok(id), Ok(at)) = (record.get_object_id("_id"), record.get_datetime("at")) else {
                continue;
            };
            if *at < cutoff {
                candidates.insert(id);
            } else {
                superseded_recently.insert(id);
            }
        }
        let mut old_uploads = grid
            .files
            .find(doc! { "uploadDate": { "$lt": cutoff } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(map_err)?;
        while let Some(file) = old_uploads.try_next().await.map_err(map_err)? {
            if let Ok(id) = file.get_object_id("_id") {
                candidates.insert(id);
            }
        }
        let mut referenced = referenced_files(metadata).await?;
        // The chunks of resumable uploads in progress have no files document yet.
        referenced.extend(super::uploads::live_sessions(metadata).await?);
        let mut report = GcReport::default();
        for id in candidates {
            if !referenced.contains(&id)
                && !superseded_recently.contains(&id)
                && grid.delete_now(id).await?
            {
                report.files += 1;
            }
        }
        // Chunks of uploads that never finished: no files document, and an id (which carries its creation time)
        // older than the grace period.
        let files_ids = grid
            .chunks
            .distinct("files_id", doc! {})
            .await
            .map_err(map_err)?;
        for files_id in files_ids {
            let Bson::ObjectId(id) = files_id else {
                continue;
            };
            let old = id.timestamp().timestamp_millis() < cutoff.timestamp_millis();
            if old && !referenced.contains(&id) && grid.file(id).await?.is_none() {
                let deleted = grid
                    .chunks
                    .delete_many(doc! { "files_id": id })
                    .await
                    .map_err(map_err)?;
                report.stray_chunks += deleted.deleted_count;
            }
        }
        Ok(report)
    }
}

/// Every GridFS id that a component refers to.
async fn referenced_files(metadata: &Database) -> Result<HashSet<ObjectId>, StoreError> {
    let mut referenced = HashSet::new();
    for kind in Kind::ALL {
        let field = file_ref_field(kind);
        let mut cursor = metadata
            .collection::<Document>(collection_name(kind))
            .find(doc! { field: { "$type": "string" } })
            .projection(doc! { field: 1 })
            .await
            .map_err(map_err)?;
        while let Some(document) = cursor.try_next().await.map_err(map_err)? {
            if let Ok(id) = document.get_str(field).map(ObjectId::parse_str) {
                referenced.extend(id.ok());
            }
        }
        // Files of per-platform variants.
        let mut cursor = metadata
            .collection::<Document>(collection_name(kind))
            .find(doc! { "variants": { "$exists": true } })
            .projection(doc! { "variants": 1 })
            .await
            .map_err(map_err)?;
        while let Some(document) = cursor.try_next().await.map_err(map_err)? {
            for variant in document.get_array("variants").into_iter().flatten() {
                let id = variant
                    .as_document()
                    .and_then(|v| v.get_str("blob_id").ok());
                referenced.extend(id.and_then(|id| ObjectId::parse_str(id).ok()));
            }
        }
    }
    Ok(referenced)
}
