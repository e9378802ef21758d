//! Webhooks in GraphQL: `createWebhook`, `deleteWebhook`, `webhooks` and each webhook's `deliveries`. Managing
//! webhooks needs a write token, reading them included; a secret is never returned.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::events::{ComponentKind, EventType};
use super::types::Long;
use crate::api::auth::{Access, Need};
use crate::api::error::GqlResultExt;
use crate::domain::{self, DeliveryStatus};
use crate::service::RepositoryService;
use crate::service::webhooks::NewWebhook;

/// Webhooks are managed with a write token, even to read them: their URLs say where the fleet's changes go.
pub fn require_write(ctx: &Context<'_>) -> async_graphql::Result<()> {
    if ctx
        .data_opt::<Access>()
        .is_some_and(|access| access.allows(Need::Write))
    {
        return Ok(());
    }
    let error = async_graphql::Error::new("managing webhooks needs a write token");
    Err(async_graphql::ErrorExtensions::extend_with(
        error,
        |_, e| e.set("code", "FORBIDDEN"),
    ))
}

#[derive(InputObject)]
pub struct CreateWebhookInput {
    /// Where deliveries are POSTed (http or https; loopback, private and link-local addresses are refused unless
    /// the server allows them).
    pub url: String,
    /// Key of the `X-Repository-Signature-256` HMAC; never returned.
    pub secret: String,
    /// Component kinds to send; absent or empty, all.
    pub kinds: Option<Vec<ComponentKind>>,
    /// Event types to send; absent or empty, all.
    pub types: Option<Vec<EventType>>,
}

/// A receiver of the change feed.
pub struct Webhook(domain::Webhook);

#[Object]
impl Webhook {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn url(&self) -> &str {
        &self.0.url
    }

    async fn kinds(&self) -> Vec<ComponentKind> {
        self.0.kinds.iter().map(|k| (*k).into()).collect()
    }

    async fn types(&self) -> Vec<EventType> {
        self.0.types.iter().map(|t| (*t).into()).collect()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The last sequence handled; deliveries continue after it, in order.
    async fn cursor(&self) -> Long {
        Long(self.0.cursor)
    }

    /// The latest deliveries, newest first (`first` defaults to 20, at most 100).
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<WebhookDelivery>> {
        let service = ctx.data::<Arc<RepositoryService>>()?;
        let deliveries = service.deliveries(&self.0.id, first).await.gql()?;
        Ok(deliveries.into_iter().map(WebhookDelivery).collect())
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum WebhookDeliveryStatus {
    /// Not yet accepted; retried with exponential backoff.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

/// One event sent to one webhook.
pub struct WebhookDelivery(domain::Delivery);

#[Object]
impl WebhookDelivery {
    /// Also the `X-Repository-Delivery` header: the same for every attempt.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn sequence(&self) -> Long {
        Long(self.0.sequence)
    }

    #[graphql(name = "type")]
    async fn event_type(&self) -> EventType {
        self.0.event_type.into()
    }

    async fn status(&self) -> WebhookDeliveryStatus {
        match self.0.status {
            DeliveryStatus::Pending => WebhookDeliveryStatus::Pending,
            DeliveryStatus::Delivered => WebhookDeliveryStatus::Delivered,
            DeliveryStatus::Failed => WebhookDeliveryStatus::Failed,
        }
    }

    async fn attempts(&self) -> i32 {
        i32::try_from(self.0.attempts).unwrap_or(i32::MAX)
    }

    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    /// HTTP status of the receiver's last answer.
    async fn last_status(&self) -> Option<i32> {
        self.0.last_status.map(i32::from)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn last_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_attempt_at
    }

    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }

    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }
}

pub async fn webhooks(ctx: &Context<'_>) -> async_graphql::Result<Vec<Webhook>> {
    require_write(ctx)?;
    let service = ctx.data::<Arc<RepositoryService>>()?;
    Ok(service
        .webhooks()
        .await
        .gql()?
        .into_iter()
        .map(Webhook)
        .collect())
}

pub async fn create(
    ctx: &Context<'_>,
    input: CreateWebhookInput,
) -> async_graphql::Result<Webhook> {
    require_write(ctx)?;
    let service = ctx.data::<Arc<RepositoryService>>()?;
    let webhook = service
        .create_webhook(NewWebhook {
            url: input.url,
            secret: input.secret,
            kinds: input
                .kinds
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            types: input
                .types
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        })
        .await
        .gql()?;
    Ok(Webhook(webhook))
}

pub async fn delete(ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
    require_write(ctx)?;
    let service = ctx.data::<Arc<RepositoryService>>()?;
    service.delete_webhook(&id).await.gql()?;
    Ok(true)
}
