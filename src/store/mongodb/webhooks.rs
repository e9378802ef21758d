//! Webhooks and their deliveries in MongoDB (collections of our own, beside the original's). Several servers on
//! one database share the work by leases on webhooks, taken with a compare-and-set.

use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::options::ReplaceOptions;
use mongodb::{Collection, Database, IndexModel};

use super::{is_duplicate_key, map_err};
use crate::domain::{Delivery, Webhook};
use crate::store::StoreError;

#[derive(Clone)]
pub struct WebhookCollections {
    webhooks: Collection<Document>,
    deliveries: Collection<Document>,
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Document, StoreError> {
    bson::to_document(value).map_err(|e| StoreError::Backend(format!("encoding a record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(document: Document) -> Result<T, StoreError> {
    bson::from_document(document)
        .map_err(|e| StoreError::Backend(format!("a stored record is damaged: {e}")))
}

fn millis(t: chrono::DateTime<chrono::Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

/// A webhook document's own fields, without what only this store adds (`_id`, the lease).
fn webhook_of(mut document: Document) -> Result<Webhook, StoreError> {
    document.remove("_id");
    document.remove("lease_owner");
    document.remove("lease_until");
    decode(document)
}

impl WebhookCollections {
    pub fn new(metadata: &Database) -> Self {
        Self {
            webhooks: metadata.collection("webhooks"),
            deliveries: metadata.collection("webhook_deliveries"),
        }
    }

    pub async fn insert(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let mut document = encode(webhook)?;
        document.insert("_id", &webhook.id);
        // The cursor is a plain number for `$max`.
        document.insert("cursor", i64::try_from(webhook.cursor).unwrap_or(i64::MAX));
        match self.webhooks.insert_one(document).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(StoreError::Backend(format!(
                "webhook id {} is taken",
                webhook.id
            ))),
            Err(e) => Err(map_err(e)),
        }
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self
            .webhooks
            .delete_one(doc! { "_id": id })
            .await
            .map_err(map_err)?;
        self.deliveries
            .delete_many(doc! { "webhook_id": id })
            .await
            .map_err(map_err)?;
        Ok(removed.deleted_count == 1)
    }

    pub async fn list(&self) -> Result<Vec<Webhook>, StoreError> {
        let documents: Vec<Document> = self
            .webhooks
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        documents.into_iter().map(webhook_of).collect()
    }

    pub async fn advance(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
        self.webhooks
            .update_one(
                doc! { "_id": id, "cursor": { "$lt": cursor } },
                doc! { "$set": { "cursor": cursor } },
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    pub async fn lease(
        &self,
        id: &str,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let now = millis(crate::domain::now());
        let taken = self
            .webhooks
            .update_one(
                doc! { "_id": id, "$or": [
                    { "lease_owner": owner },
                    { "lease_until": { "$exists": false } },
                    { "lease_until": null },
                    { "lease_until": { "$lt": now } },
                ] },
                doc! { "$set": { "lease_owner": owner, "lease_until": millis(until) } },
            )
            .await
            .map_err(map_err)?;
        Ok(taken.matched_count == 1)
    }

    pub async fn save_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let mut document = encode(delivery)?;
        document.insert("_id", &delivery.id);
        document.insert(
            "sequence",
            i64::try_from(delivery.sequence).unwrap_or(i64::MAX),
        );
        // A number for the retention's range query (the serialized `created_at` is text of varying precision).
        document.insert("created_ms", delivery.created_at.timestamp_millis());
        self.deliveries
            .replace_one(doc! { "_id": &delivery.id }, document)
            .with_options(ReplaceOptions::builder().upsert(true).build())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    pub async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let documents: Vec<Document> = self
            .deliveries
            .find(doc! { "webhook_id": webhook_id })
            .sort(doc! { "sequence": -1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        documents
            .into_iter()
            .map(|mut d| {
                d.remove("_id");
                d.remove("created_ms");
                decode(d)
            })
            .collect()
    }

    pub async fn prune(
        &self,
        webhook_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, StoreError> {
        // Listing and pruning go by webhook and sequence; creating an existing index is a no-op.
        let index = IndexModel::builder()
            .keys(doc! { "webhook_id": 1, "sequence": -1 })
            .build();
        self.deliveries.create_index(index).await.map_err(map_err)?;
        let settled = doc! { "$ne": "pending" };
        let mut removed = self
            .deliveries
            .delete_many(doc! {
                "webhook_id": webhook_id,
                "status": settled.clone(),
                "created_ms": { "$lt": before.timestamp_millis() },
            })
            .await
            .map_err(map_err)?
            .deleted_count;
        // The newest delivery beyond the ones kept; it and everything older go.
        let oldest_dropped = self
            .deliveries
            .find_one(doc! { "webhook_id": webhook_id })
            .sort(doc! { "sequence": -1 })
            .skip(u64::try_from(keep).unwrap_or(u64::MAX))
            .projection(doc! { "sequence": 1 })
            .await
            .map_err(map_err)?;
        if let Some(sequence) = oldest_dropped.and_then(|d| d.get("sequence").cloned()) {
            removed += self
                .deliveries
                .delete_many(doc! {
                    "webhook_id": webhook_id,
                    "status": settled,
                    "sequence": { "$lte": sequence },
                })
                .await
                .map_err(map_err)?
                .deleted_count;
        }
        Ok(removed)
    }
}

#[async_trait::async_trait]
impl crate::store::WebhookStore for super::MongoStore {
    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        self.webhooks.insert(webhook).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        self.webhooks.delete(id).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.webhooks.list().await
    }

    async fn advance_webhook(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        self.webhooks.advance(id, cursor).await
    }

    async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        self.webhooks.lease(id, owner, until).await
    }

    async fn save_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.webhooks.save_delivery(delivery).await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.webhooks.deliveries(webhook_id, limit).await
    }

    async fn prune_deliveries(
        &self,
        webhook_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, StoreError> {
        self.webhooks.prune(webhook_id, before, keep).await
    }
}
