//! Device reports in MongoDB: the `device_reports` collection, one document per device (`_id` is its id), indexed
//! by hardware class, by what devices run and by when the report came.

use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::options::ReplaceOptions;
use mongodb::{Collection, IndexModel};

use super::{MongoStore, map_err};
use crate::domain::DeviceReport;
use crate::store::{DeviceQuery, DeviceStore, StoreError};

pub(super) const DEVICE_REPORTS: &str = "device_reports";
/// The report's time in milliseconds, a number for range queries (the report's own field is text).
const RECEIVED: &str = "received_ms";

fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// The indexes the queries below use.
pub(super) fn indexes() -> Vec<IndexModel> {
    [
        doc! { "hardware_class": 1 },
        doc! { "running_slots": 1, RECEIVED: 1 },
        doc! { RECEIVED: 1 },
    ]
    .into_iter()
    .map(|keys| IndexModel::builder().keys(keys).build())
    .collect()
}

fn decode(mut document: Document) -> Result<DeviceReport, StoreError> {
    document.remove("_id");
    document.remove(RECEIVED);
    bson::from_document(document)
        .map_err(|e| StoreError::Backend(format!("a stored device report is damaged: {e}")))
}

fn filter(query: &DeviceQuery) -> Document {
    let mut filter = doc! { RECEIVED: { "$gte": millis(query.since) } };
    if let Some(class) = &query.hardware_class {
        filter.insert("hardware_class", class);
    }
    if let Some(slot) = &query.running_slot {
        filter.insert("running_slots", slot);
    }
    filter
}

impl MongoStore {
    fn device_reports(&self) -> Collection<Document> {
        self.metadata.collection(DEVICE_REPORTS)
    }
}

#[async_trait::async_trait]
impl DeviceStore for MongoStore {
    async fn put_report(&self, report: &DeviceReport) -> Result<(), StoreError> {
        let mut document = bson::to_document(report)
            .map_err(|e| StoreError::Backend(format!("encoding a device report: {e}")))?;
        document.insert("_id", &report.id);
        document.insert(RECEIVED, millis(report.received_at));
        self.device_reports()
            .replace_one(doc! { "_id": &report.id }, document)
            .with_options(ReplaceOptions::builder().upsert(true).build())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn report(&self, id: &str) -> Result<Option<DeviceReport>, StoreError> {
        self.device_reports()
            .find_one(doc! { "_id": id })
            .await
            .map_err(map_err)?
            .map(decode)
            .transpose()
    }

    async fn reports(&self, query: &DeviceQuery) -> Result<Vec<DeviceReport>, StoreError> {
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let documents: Vec<Document> = self
            .device_reports()
            .find(filter(query))
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        documents.into_iter().map(decode).collect()
    }

    async fn count_running(
        &self,
        running_slot: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let query = DeviceQuery::running(running_slot, since);
        self.device_reports()
            .count_documents(filter(&query))
            .await
            .map_err(map_err)
    }

    async fn expire_reports(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let deleted = self
            .device_reports()
            .delete_many(doc! { RECEIVED: { "$lt": millis(before) } })
            .await
            .map_err(map_err)?;
        Ok(deleted.deleted_count)
    }
}
