//! Files the original service stored: GridFS files referenced by id, without our record of their hash. They are
//! read as they are, and their sha256 is computed once in the background.

use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};
use sha2::{Digest, Sha256};

use super::documents::{file_document, file_ref_field, integer};
use super::{MongoStore, map_err};
use crate::domain::{Kind, StoredFile};
use crate::store::StoreError;

impl MongoStore {
    /// Computes the sha256 of files that the original service stored (it recorded no hash) and records it beside
    /// the reference, so that those files get their hash and ETag. Idempotent; the server runs it in the
    /// background at start-up. Returns how many files it hashed.
    pub async fn backfill_legacy_hashes(&self) -> Result<u64, StoreError> {
        let mut hashed = 0;
        for kind in Kind::ALL {
            let field = file_ref_field(kind);
            let collection = self.collection(kind);
            let mut cursor = collection
                .find(doc! { field: { "$type": "string" }, "file": { "$exists": false } })
                .await
                .map_err(map_err)?;
            while let Some(document) = cursor.try_next().await.map_err(map_err)? {
                let Some((blob, id)) = document
                    .get_str(field)
                    .ok()
                    .and_then(|blob| Some((blob.to_string(), ObjectId::parse_str(blob).ok()?)))
                else {
                    continue;
                };
                let Some(files_document) = self.grid.file(id).await? else {
                    tracing::warn!(%kind, %blob, "a component refers to a GridFS file that does not exist");
                    continue;
                };
                let mut file = legacy_stored_file(id, &files_document);
                let Some(mut bytes) = self.grid.read(id, 0..file.size).await? else {
                    continue;
                };
                let mut hasher = Sha256::new();
                while let Some(chunk) = bytes.try_next().await? {
                    hasher.update(&chunk);
                }
                file.sha256 = hex::encode(hasher.finalize());
                // Only if the reference is still the one hashed: an upload in between wins.
                collection
                    .update_one(
                        doc! { "_id": document.get("_id"), field: &blob, "file": { "$exists": false } },
                        doc! { "$set": { "file": file_document(&file) } },
                    )
                    .await
                    .map_err(map_err)?;
                hashed += 1;
            }
        }
        Ok(hashed)
    }
}

/// A file the original service stored: its size and date come from GridFS; its hash stays empty until the
/// backfill has computed it (the download's ETag is then the GridFS id).
pub(super) fn legacy_stored_file(id: ObjectId, file: &Document) -> StoredFile {
    let metadata = file.get_document("metadata").ok();
    let text = |name: &str| {
        metadata
            .and_then(|m| m.get_str(name).ok())
            .unwrap_or_default()
            .to_string()
    };
    let size = integer(file.get("length"))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_default();
    let filename = file
        .get_str("filename")
        .ok()
        .and_then(|name| name.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    StoredFile {
        blob_id: id.to_hex(),
        size,
        sha256: text("sha256"),
        content_type: match text("content_type") {
            t if t.is_empty() => "application/octet-stream".to_string(),
            t => t,
        },
        filename,
        uploaded_at: file
            .get_datetime("uploadDate")
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
            .unwrap_or_default(),
        signatures: Vec::new(),
    }
}
