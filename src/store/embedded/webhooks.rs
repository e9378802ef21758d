//! Webhooks and their deliveries in redb. One process owns the database, so leases are always granted.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{EmbeddedStore, OrBackend};
use crate::domain::{Delivery, DeliveryStatus, Webhook};
use crate::store::StoreError;
use crate::store::WebhookStore;

/// webhook id -> the webhook as JSON.
const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// `<webhook id>/<sequence, 20 digits>` -> the delivery as JSON, so one webhook's deliveries sort by sequence.
const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_deliveries");

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encoding a record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Backend(format!("a stored record is damaged: {e}")))
}

fn delivery_key(webhook_id: &str, sequence: u64) -> String {
    format!("{webhook_id}/{sequence:020}")
}

pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(WEBHOOKS).or_backend()?;
    txn.open_table(DELIVERIES).or_backend()?;
    Ok(())
}

pub(super) fn insert(db: &Database, webhook: &Webhook) -> Result<(), StoreError> {
    let txn = db.begin_write().or_backend()?;
    txn.open_table(WEBHOOKS)
        .or_backend()?
        .insert(webhook.id.as_str(), encode(webhook)?.as_slice())
        .or_backend()?;
    txn.commit().or_backend()
}

pub(super) fn delete(db: &Database, id: &str) -> Result<bool, StoreError> {
    let txn = db.begin_write().or_backend()?;
    let removed = txn
        .open_table(WEBHOOKS)
        .or_backend()?
        .remove(id)
        .or_backend()?
        .is_some();
    let prefix = format!("{id}/");
    txn.open_table(DELIVERIES)
        .or_backend()?
        .retain(|key, _| !key.starts_with(&prefix))
        .or_backend()?;
    txn.commit().or_backend()?;
    Ok(removed)
}

pub(super) fn list(db: &Database) -> Result<Vec<Webhook>, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = txn.open_table(WEBHOOKS).or_backend()?;
    let mut webhooks = Vec::new();
    for entry in table.iter().or_backend()? {
        let (_, value) = entry.or_backend()?;
        webhooks.push(decode(value.value())?);
    }
    Ok(webhooks)
}

pub(super) fn advance(db: &Database, id: &str, cursor: u64) -> Result<(), StoreError> {
    let txn = db.begin_write().or_backend()?;
    {
        let mut table = txn.open_table(WEBHOOKS).or_backend()?;
        let found = table.get(id).or_backend()?.map(|v| v.value().to_vec());
        if let Some(bytes) = found {
            let mut webhook: Webhook = decode(&bytes)?;
            if cursor > webhook.cursor {
                webhook.cursor = cursor;
                table
                    .insert(id, encode(&webhook)?.as_slice())
                    .or_backend()?;
            }
        }
    }
    txn.commit().or_backend()
}

pub(super) fn save_delivery(db: &Database, delivery: &Delivery) -> Result<(), StoreError> {
    let txn = db.begin_write().or_backend()?;
    let exists = txn
        .open_table(WEBHOOKS)
        .or_backend()?
        .get(delivery.webhook_id.as_str())
        .or_backend()?
        .is_some();
    // A delivery of a webhook deleted meanwhile is not kept.
    if exists {
        txn.open_table(DELIVERIES)
            .or_backend()?
            .insert(
                delivery_key(&delivery.webhook_id, delivery.sequence).as_str(),
                encode(delivery)?.as_slice(),
            )
            .or_backend()?;
    }
    txn.commit().or_backend()
}

pub(super) fn deliveries(
    db: &Database,
    webhook_id: &str,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = txn.open_table(DELIVERIES).or_backend()?;
    let (start, end) = (format!("{webhook_id}/"), format!("{webhook_id}0"));
    let mut found = Vec::new();
    for entry in table
        .range(start.as_str()..end.as_str())
        .or_backend()?
        .rev()
        .take(limit)
    {
        let (_, value) = entry.or_backend()?;
        found.push(decode(value.value())?);
    }
    Ok(found)
}

pub(super) fn prune(
    db: &Database,
    webhook_id: &str,
    before: chrono::DateTime<chrono::Utc>,
    keep: usize,
) -> Result<u64, StoreError> {
    let (start, end) = (format!("{webhook_id}/"), format!("{webhook_id}0"));
    let txn = db.begin_write().or_backend()?;
    let mut removed = 0u64;
    {
        let mut table = txn.open_table(DELIVERIES).or_backend()?;
        // Two passes over the keys rather than collecting them: memory stays flat however many there are.
        let total = table
            .range(start.as_str()..end.as_str())
            .or_backend()?
            .count();
        let beyond_keep = total.saturating_sub(keep);
        let mut index = 0usize;
        let mut damaged = None;
        table
            .retain_in(start.as_str()..end.as_str(), |_, value| {
                let position = index;
                index += 1;
                let delivery: Delivery = match decode(value) {
                    Ok(delivery) => delivery,
                    Err(e) => {
                        damaged = Some(e);
                        return true;
                    }
                };
                let settled = delivery.status != DeliveryStatus::Pending;
                let prune = settled && (position < beyond_keep || delivery.created_at < before);
                removed += u64::from(prune);
                !prune
            })
            .or_backend()?;
        if let Some(e) = damaged {
            return Err(e);
        }
    }
    txn.commit().or_backend()?;
    Ok(removed)
}

#[async_trait::async_trait]
impl WebhookStore for EmbeddedStore {
    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let webhook = webhook.clone();
        self.blocking(move |db| insert(db, &webhook)).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| delete(db, &id)).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.blocking(list).await
    }

    async fn advance_webhook(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.blocking(move |db| advance(db, &id, cursor)).await
    }

    async fn lease_webhook(
        &self,
        _id: &str,
        _owner: &str,
        _until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        // The database is open in this process only.
        Ok(true)
    }

    async fn save_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.blocking(move |db| save_delivery(db, &delivery)).await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let webhook_id = webhook_id.to_string();
        self.blocking(move |db| deliveries(db, &webhook_id, limit))
            .await
    }

    async fn prune_deliveries(
        &self,
        webhook_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, StoreError> {
        let webhook_id = webhook_id.to_string();
        self.blocking(move |db| prune(db, &webhook_id, before, keep))
            .await
    }
}
