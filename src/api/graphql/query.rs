use std::sync::Arc;

use async_graphql::{Context, ID, Object};

use super::inputs::{
    ComponentFilterInput, DeviceInput, InferencerFilter, ModelFilter, RunnableKind,
};
use super::types::{
    AliasMove, FromNode, Inferencer, Model, Node, Page, Service, Transformation, page,
};
use crate::api::error::GqlResultExt;
use crate::api::state::Links;
use crate::domain::{ComponentFilter, ComponentKey, Device, Kind};
use crate::service::{RepositoryService, ServiceError};

pub struct QueryRoot;

/// One component by key, as the GraphQL type `T`; null when absent.
async fn one<T: FromNode>(
    ctx: &Context<'_>,
    key: Result<ComponentKey, crate::domain::DomainError>,
) -> async_graphql::Result<Option<T>> {
    let key = key.gql()?;
    let service = ctx.data::<Arc<RepositoryService>>()?;
    let links = ctx.data::<Links>()?;
    service
        .find(&key)
        .await
        .gql()?
        .map(|c| T::from_node(Node::new(c, links)))
        .transpose()
}

async fn listing<T: FromNode + async_graphql::OutputType>(
    ctx: &Context<'_>,
    kind: Kind,
    filter: ComponentFilter,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<Page<T>> {
    let service = ctx.data::<Arc<RepositoryService>>()?;
    let links = ctx.data::<Links>()?;
    let listing = service
        .list(kind, filter, first, after.as_deref(), wants_total(ctx))
        .await;
    page(listing, after.as_deref(), links)
}

/// Whether the query selects `totalCount`: counting costs a pass over every match, so it is done only when asked.
fn wants_total(ctx: &Context<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}

/// Pages take `first` (default 20, at most 100) and `after` (the `endCursor` of the previous page).
#[Object]
impl QueryRoot {
    /// One model by name and either `version` or `alias` (such as `production`); null when absent. With `alias`,
    /// `device` is the id of the device asking (as it reports itself): while a rollout moves the alias, the device
    /// gets its cohort's version.
    async fn model(
        &self,
        ctx: &Context<'_>,
        name: String,
        version: Option<String>,
        alias: Option<String>,
        device: Option<String>,
    ) -> async_graphql::Result<Option<Model>> {
        let version = match (version, alias) {
            (Some(version), None) => version,
            (None, Some(alias)) => {
                let service = ctx.data::<Arc<RepositoryService>>()?;
                match service
                    .resolve_alias_for(&name, &alias, device.as_deref())
                    .await
                {
                    Ok(key) => return one(ctx, Ok(key)).await,
                    Err(ServiceError::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(e).gql(),
                }
            }
            _ => {
                return Err(ServiceError::InvalidInput(
                    "model: give either `version` or `alias`".into(),
                ))
                .gql();
            }
        };
        one(ctx, ComponentKey::model(name, version)).await
    }

    /// Every move of an alias of a model, oldest first: what it pointed at when, and who moved it.
    async fn model_alias_history(
        &self,
        ctx: &Context<'_>,
        name: String,
        alias: String,
    ) -> async_graphql::Result<Vec<AliasMove>> {
        let service = ctx.data::<Arc<RepositoryService>>()?;
        let moves = service.alias_history(&name, &alias).await.gql()?;
        Ok(moves.into_iter().map(Into::into).collect())
    }

    async fn transformation(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Transformation>> {
        one(ctx, ComponentKey::with_id(Kind::Transformation, id.0)).await
    }

    async fn service(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Service>> {
        one(ctx, ComponentKey::with_id(Kind::Service, id.0)).await
    }

    async fn inferencer(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Inferencer>> {
        one(ctx, ComponentKey::with_id(Kind::Inferencer, id.0)).await
    }

    /// Models ordered by name, then version. `filter: {name: "..."}` lists the versions of one model.
    async fn models(
        &self,
        ctx: &Context<'_>,
        filter: Option<ModelFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Model>> {
        listing(
            ctx,
            Kind::Model,
            filter.unwrap_or_default().into(),
            first,
            after,
        )
        .await
    }

    /// Transformations ordered by id.
    async fn transformations(
        &self,
        ctx: &Context<'_>,
        filter: Option<ComponentFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Transformation>> {
        listing(
            ctx,
            Kind::Transformation,
            filter.unwrap_or_default().into(),
            first,
            after,
        )
        .await
    }

    /// Services ordered by id.
    async fn services(
        &self,
        ctx: &Context<'_>,
        filter: Option<ComponentFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Service>> {
        listing(
            ctx,
            Kind::Service,
            filter.unwrap_or_default().into(),
            first,
            after,
        )
        .await
    }

    /// Inferencers ordered by id.
    async fn inferencers(
        &self,
        ctx: &Context<'_>,
        filter: Option<InferencerFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Inferencer>> {
        listing(
            ctx,
            Kind::Inferencer,
            filter.unwrap_or_default().into(),
            first,
            after,
        )
        .await
    }

    /// The change feed: events after the cursor `after` (a sequence; from the oldest retained when absent), at most
    /// `first` (default 100, at most 1000). Fails with `EVENTS_EXPIRED` when events after `after` are no longer
    /// retained, and with `EVENTS_AHEAD` when `after` is beyond `lastSequence` (the cursor is of another feed: see
    /// `feedId`): list the components again, then follow the feed from `lastSequence`.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
        filter: Option<super::events::EventFilterInput>,
    ) -> async_graphql::Result<super::events::EventConnection> {
        super::events::events(ctx, after, first, filter).await
    }

    /// The live devices (their latest report is newer than `--device-report-ttl`) that match `filter`, by id:
    /// what each runs, its hardware class and when it was last seen. At most `first` (default and most 10,000).
    async fn devices(
        &self,
        ctx: &Context<'_>,
        filter: Option<super::devices::DevicesFilter>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<super::devices::ReportedDevice>> {
        super::devices::devices(ctx, filter, first).await
    }

    /// A live device's latest report; null when it never reported or its report expired.
    async fn device(
        &self,
        ctx: &Context<'_>,
        id: String,
    ) -> async_graphql::Result<Option<super::devices::ReportedDevice>> {
        super::devices::device(ctx, id).await
    }

    /// A rollout by id; null when there is none.
    async fn rollout(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
    ) -> async_graphql::Result<Option<super::rollouts::Rollout>> {
        super::rollouts::rollout(ctx, id).await
    }

    /// The rollouts of a model, newest first.
    async fn rollouts(
        &self,
        ctx: &Context<'_>,
        model: String,
    ) -> async_graphql::Result<Vec<super::rollouts::Rollout>> {
        super::rollouts::rollouts(ctx, model).await
    }

    /// The webhooks, with their deliveries. Needs a write token.
    async fn webhooks(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<super::webhooks::Webhook>> {
        super::webhooks::webhooks(ctx).await
    }

    /// The sequence of the newest event the feed can deliver: where a consumer that has just listed the
    /// components starts following.
    async fn last_sequence(&self, ctx: &Context<'_>) -> async_graphql::Result<super::types::Long> {
        let service = ctx.data::<Arc<RepositoryService>>()?;
        Ok(super::types::Long(service.last_sequence().await.gql()?))
    }

    /// The change feed's id, made with the store: sequences are positions in this feed only. A consumer keeps it
    /// with its cursor; another id (the repository was rebuilt at the same address) means list everything again.
    async fn feed_id(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let service = ctx.data::<Arc<RepositoryService>>()?;
        service.feed_id().await.gql()
    }

    /// Where this edge mirror stands with its upstream; null when this server is not a mirror.
    async fn mirror(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::mirror::Mirror>> {
        let service = ctx.data::<Arc<RepositoryService>>()?;
        Ok(service.mirror_status().map(|m| m.snapshot().into()))
    }

    /// Every transformation, service and inferencer whose needs `device` satisfies (restricted to `kinds` when
    /// given), ordered by kind and then id. A device satisfies needs when: it has a GPU if one is needed; its RAM
    /// and storage are at least the need (when the device states them); every needed library is installed in a
    /// version the requirement accepts (PEP 440: `2.12.0` means `==2.12.0`, ranges like `>=2.12,<3`, empty or `*`
    /// for any); every needed model is present in exactly the named version.
    async fn runnable_on(
        &self,
        ctx: &Context<'_>,
        device: DeviceInput,
        kinds: Option<Vec<RunnableKind>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Node>> {
        let service = ctx.data::<Arc<RepositoryService>>()?;
        let links = ctx.data::<Links>()?;
        let kinds = kinds.map(|ks| ks.into_iter().map(Kind::from).collect());
        let listing = service
            .runnable_on(
                Device::try_from(device).gql()?,
                kinds,
                first,
                after.as_deref(),
                wants_total(ctx),
            )
            .await;
        page(listing, after.as_deref(), links)
    }

    /// Resolves an inference server's whole configuration for a device: the file of every part, the sums of their
    /// needs (they share one process), every problem with a code and a sentence, and a lock digest that changes
    /// exactly when what the device would fetch changes. Missing parts are problems, not errors.
    async fn resolve_pipeline(
        &self,
        ctx: &Context<'_>,
        device: DeviceInput,
        pipeline: super::pipeline::PipelineInput,
    ) -> async_graphql::Result<super::pipeline::PipelineResolution> {
        super::pipeline::resolve(ctx, device, pipeline).await
    }
}
