//! Stored bytes in GridFS: staging uploads, reads, lookups by digest and garbage collection.

use std::ops::Range;
use std::time::Duration;

use mongodb::bson::doc;

use super::{MongoStore, blob_object_id, map_err};
use crate::domain::{Kind, Sha256, StoredFile};
use crate::store::{BlobStore, ByteStream, GcReport, StagedBlob, StoreError, UploadStream};

#[async_trait::async_trait]
impl BlobStore for MongoStore {
    async fn stage(&self, body: UploadStream<'_>, limit: u64) -> Result<StagedBlob, StoreError> {
        self.grid.stage(body, limit).await
    }

    async fn collect_garbage(&self, grace: Duration) -> Result<GcReport, StoreError> {
        self.collect_garbage_now(grace).await
    }

    async fn read_blob(
        &self,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, StoreError> {
        self.grid.read(blob_object_id(file)?, range).await
    }

    async fn blob(&self, sha256: &Sha256) -> Result<Option<StoredFile>, StoreError> {
        let sha256 = sha256.as_str();
        // Only bytes a component refers to are served, never an upload that is not attached (yet or any more).
        // `$elemMatch` on the array of variants: MongoDB serves it with the multikey index on
        // `variants.file.sha256` as it serves the dotted path.
        let queries = [
            doc! { "file.sha256": sha256 },
            doc! { "variants": { "$elemMatch": { "file.sha256": sha256 } } },
        ];
        for kind in Kind::ALL {
            for query in &queries {
                let Some(document) = self
                    .collection(kind)
                    .find_one(query.clone())
                    .await
                    .map_err(map_err)?
                else {
                    continue;
                };
                let component = self
                    .decode_all(kind, &[document])
                    .await?
                    .pop()
                    .map(|d| d.component);
                let found = component.and_then(|c| {
                    c.file
                        .into_iter()
                        .chain(c.variants.into_iter().map(|v| v.file))
                        .find(|f| f.sha256 == sha256)
                });
                if let Some(file) = found {
                    return Ok(Some(crate::store::digest_file(file)));
                }
            }
        }
        Ok(None)
    }
}
