//! Webhooks: where the change feed is pushed, and the record of each delivery.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DomainError, Event, EventType, Kind};

/// A receiver of the feed's events, as stored. The secret never leaves the server after creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub secret: String,
    /// Component kinds to send; empty means all.
    pub kinds: Vec<Kind>,
    /// Event types to send; empty means all.
    pub types: Vec<EventType>,
    pub created_at: DateTime<Utc>,
    /// The last sequence handled (delivered or given up on): delivery resumes after it, in order.
    pub cursor: u64,
}

impl Webhook {
    pub fn wants(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind()))
            && (self.types.is_empty() || self.types.contains(&event.draft.event_type))
    }

    pub fn validate(&self) -> Result<(), DomainError> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
            return Err(DomainError::new(
                "url",
                "a webhook's URL is http:// or https://, at most 2048 bytes",
            ));
        }
        if self.secret.is_empty() || self.secret.len() > 256 {
            return Err(DomainError::new(
                "secret",
                "a webhook needs a secret of 1 to 256 bytes to sign its deliveries",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet accepted by the receiver; retried with backoff.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed; the webhook went on to the next event.
    Failed,
}

/// One event sent (or being sent) to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `<webhook id>-<sequence>`: the same for every attempt, so receivers can drop repeats.
    pub id: String,
    pub webhook_id: String,
    pub sequence: u64,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Delivery {
    pub fn new(webhook: &Webhook, event: &Event, now: DateTime<Utc>) -> Self {
        Self {
            id: format!("{}-{}", webhook.id, event.sequence),
            webhook_id: webhook.id.clone(),
            sequence: event.sequence,
            event_type: event.draft.event_type,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            last_status: None,
            created_at: now,
            last_attempt_at: None,
            next_attempt_at: Some(now),
            delivered_at: None,
        }
    }
}
