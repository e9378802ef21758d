//! Device reports in redb: one record per device, the latest report. Reads scan the table, which holds one small
//! record per device (a fleet of 10,000 is a few MB).

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{EmbeddedStore, OrBackend};
use crate::domain::DeviceReport;
use crate::store::{DeviceQuery, DeviceStore, StoreError};

/// device id -> its latest report as JSON.
const DEVICE_REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("device_reports");

fn decode(bytes: &[u8]) -> Result<DeviceReport, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Backend(format!("a stored device report is damaged: {e}")))
}

pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(DEVICE_REPORTS).or_backend()?;
    Ok(())
}

fn put(db: &Database, report: &DeviceReport) -> Result<(), StoreError> {
    let json = serde_json::to_vec(report)
        .map_err(|e| StoreError::Backend(format!("encoding a device report: {e}")))?;
    let txn = db.begin_write().or_backend()?;
    txn.open_table(DEVICE_REPORTS)
        .or_backend()?
        .insert(report.id.as_str(), json.as_slice())
        .or_backend()?;
    txn.commit().or_backend()
}

fn get(db: &Database, id: &str) -> Result<Option<DeviceReport>, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = txn.open_table(DEVICE_REPORTS).or_backend()?;
    let found = table.get(id).or_backend()?;
    found.map(|value| decode(value.value())).transpose()
}

/// The fields of a stored report that filters look at: decoding only them keeps counts (one per delete) cheap.
#[derive(serde::Deserialize)]
struct Head {
    hardware_class: String,
    running_slots: Vec<String>,
    received_at: chrono::DateTime<chrono::Utc>,
}

/// Visits the stored JSON of every report that matches `query` (its limit aside), by device id, until `visit` says
/// stop.
fn scan(
    db: &Database,
    query: &DeviceQuery,
    mut visit: impl FnMut(&[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = txn.open_table(DEVICE_REPORTS).or_backend()?;
    for entry in table.iter().or_backend()? {
        let (_, value) = entry.or_backend()?;
        let head: Head = serde_json::from_slice(value.value())
            .map_err(|e| StoreError::Backend(format!("a stored device report is damaged: {e}")))?;
        let matches = head.received_at >= query.since
            && query
                .hardware_class
                .as_ref()
                .is_none_or(|class| &head.hardware_class == class)
            && query
                .running_slot
                .as_ref()
                .is_none_or(|slot| head.running_slots.contains(slot));
        if matches && !visit(value.value())? {
            break;
        }
    }
    Ok(())
}

fn expire(db: &Database, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
    let txn = db.begin_write().or_backend()?;
    let mut removed = 0u64;
    {
        let mut table = txn.open_table(DEVICE_REPORTS).or_backend()?;
        table
            .retain(|_, value| {
                // A damaged record is kept: it is reported by reads, not lost silently.
                let expired =
                    serde_json::from_slice::<Head>(value).is_ok_and(|r| r.received_at < before);
                removed += u64::from(expired);
                !expired
            })
            .or_backend()?;
    }
    txn.commit().or_backend()?;
    Ok(removed)
}

#[async_trait::async_trait]
impl DeviceStore for EmbeddedStore {
    async fn put_report(&self, report: &DeviceReport) -> Result<(), StoreError> {
        let report = report.clone();
        self.blocking(move |db| put(db, &report)).await
    }

    async fn report(&self, id: &str) -> Result<Option<DeviceReport>, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| get(db, &id)).await
    }

    async fn reports(&self, query: &DeviceQuery) -> Result<Vec<DeviceReport>, StoreError> {
        let query = query.clone();
        self.blocking(move |db| {
            let mut found = Vec::new();
            scan(db, &query, |json| {
                found.push(decode(json)?);
                Ok(found.len() < query.limit)
            })?;
            Ok(found)
        })
        .await
    }

    async fn count_running(
        &self,
        running_slot: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let query = DeviceQuery::running(running_slot, since);
        self.blocking(move |db| {
            let mut count = 0u64;
            scan(db, &query, |_| {
                count += 1;
                Ok(true)
            })?;
            Ok(count)
        })
        .await
    }

    async fn expire_reports(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        self.blocking(move |db| expire(db, before)).await
    }
}
