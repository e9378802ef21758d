//! The change feed in GraphQL: the `events` query, the `componentEvents` subscription and their types.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};

use super::inputs::DeviceInput;
use super::types::Long;
use crate::api::error::GqlResultExt;
use crate::api::metrics::Metrics;
use crate::api::state::Links;
use crate::domain::{self, ComponentKey, Device, EventFilter, Kind};
use crate::service::{RepositoryService, ServiceError};

/// The kind of a component.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ComponentKind")]
pub enum ComponentKind {
    Model,
    Transformation,
    Service,
    Inferencer,
}

impl From<ComponentKind> for Kind {
    fn from(k: ComponentKind) -> Self {
        match k {
            ComponentKind::Model => Kind::Model,
            ComponentKind::Transformation => Kind::Transformation,
            ComponentKind::Service => Kind::Service,
            ComponentKind::Inferencer => Kind::Inferencer,
        }
    }
}

impl From<Kind> for ComponentKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Model => ComponentKind::Model,
            Kind::Transformation => ComponentKind::Transformation,
            Kind::Service => ComponentKind::Service,
            Kind::Inferencer => ComponentKind::Inferencer,
        }
    }
}

/// What happened to a component.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Created,
    Updated,
    /// The component got its first file.
    FileUploaded,
    /// The component's file was replaced.
    FileReplaced,
    Deleted,
    /// An alias of a model was pointed at this version (new, or moved from another version): see `alias`.
    AliasSet,
    /// An alias of a model was removed; the event names the version it named: see `alias`.
    AliasDeleted,
    /// The component was locked (`lockModel`, `lock…`).
    Locked,
    /// A signature was attached to one of the component's files (`addSignature`): see `file`.
    SignatureAdded,
    /// A rollout of an alias to this version began (`startRollout`): see `rollout`.
    RolloutStarted,
    /// A hardware class failed its rollout's gate and went back to the old version: see `rollout` for why.
    RolloutClassAborted,
    /// A rollout to this version ended (completed, reverted or aborted): see `rollout`.
    RolloutEnded,
}

impl From<EventType> for domain::EventType {
    fn from(t: EventType) -> Self {
        match t {
            EventType::Created => domain::EventType::Created,
            EventType::Updated => domain::EventType::Updated,
            EventType::FileUploaded => domain::EventType::FileUploaded,
            EventType::FileReplaced => domain::EventType::FileReplaced,
            EventType::Deleted => domain::EventType::Deleted,
            EventType::AliasSet => domain::EventType::AliasSet,
            EventType::AliasDeleted => domain::EventType::AliasDeleted,
            EventType::Locked => domain::EventType::Locked,
            EventType::SignatureAdded => domain::EventType::SignatureAdded,
            EventType::RolloutStarted => domain::EventType::RolloutStarted,
            EventType::RolloutClassAborted => domain::EventType::RolloutClassAborted,
            EventType::RolloutEnded => domain::EventType::RolloutEnded,
        }
    }
}

impl From<domain::EventType> for EventType {
    fn from(t: domain::EventType) -> Self {
        match t {
            domain::EventType::Created => EventType::Created,
            domain::EventType::Updated => EventType::Updated,
            domain::EventType::FileUploaded => EventType::FileUploaded,
            domain::EventType::FileReplaced => EventType::FileReplaced,
            domain::EventType::Deleted => EventType::Deleted,
            domain::EventType::AliasSet => EventType::AliasSet,
            domain::EventType::AliasDeleted => EventType::AliasDeleted,
            domain::EventType::Locked => EventType::Locked,
            domain::EventType::SignatureAdded => EventType::SignatureAdded,
            domain::EventType::RolloutStarted => EventType::RolloutStarted,
            domain::EventType::RolloutClassAborted => EventType::RolloutClassAborted,
            domain::EventType::RolloutEnded => EventType::RolloutEnded,
        }
    }
}

/// Which events to return; an empty or absent list means all.
#[derive(InputObject, Default)]
pub struct EventFilterInput {
    pub kinds: Option<Vec<ComponentKind>>,
    pub types: Option<Vec<EventType>>,
    /// Only events of transformations, services and inferencers that this device can run, before or after the
    /// change.
    pub runnable_on: Option<DeviceInput>,
}

impl From<EventFilterInput> for EventFilter {
    fn from(f: EventFilterInput) -> Self {
        EventFilter {
            kinds: f
                .kinds
                .unwrap_or_default()
                .into_iter()
                .map(Kind::from)
                .collect(),
            types: f
                .types
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            runnable_on: f.runnable_on.map(Device::lenient),
        }
    }
}

/// The file a change left in place.
#[derive(SimpleObject)]
pub struct EventFile {
    pub sha256: String,
    pub size: Long,
    /// Where to download it (while it is still the component's file).
    pub download_url: String,
}

/// The alias move an `ALIAS_SET` or `ALIAS_DELETED` event records, as `modelAliasHistory` lists it.
#[derive(SimpleObject)]
pub struct EventAlias {
    pub alias: String,
    /// The version the alias named before; null when it is new.
    pub from: Option<String>,
    /// The version it names now; null when it was deleted.
    pub to: Option<String>,
    /// The label of the token that moved it.
    pub by: String,
}

/// One change to one component, in the order of the feed.
pub struct ComponentEvent {
    event: domain::Event,
    download_url: String,
}

impl ComponentEvent {
    pub fn new(event: domain::Event, links: &Links) -> Self {
        let download_url = links.download_url(&event.draft.key);
        Self {
            event,
            download_url,
        }
    }
}

#[Object]
impl ComponentEvent {
    /// Strictly increasing across the feed; resume after it with `after`.
    async fn sequence(&self) -> Long {
        Long(self.event.sequence)
    }

    /// When the change committed.
    async fn at(&self) -> DateTime<Utc> {
        self.event.at
    }

    #[graphql(name = "type")]
    async fn event_type(&self) -> EventType {
        self.event.draft.event_type.into()
    }

    async fn kind(&self) -> ComponentKind {
        self.event.kind().into()
    }

    /// The id of a transformation, service or inferencer; null for models.
    async fn id(&self) -> Option<&str> {
        match &self.event.draft.key {
            ComponentKey::Model(_) => None,
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => Some(id),
        }
    }

    /// The name of a model; null for other kinds.
    async fn name(&self) -> Option<&str> {
        match &self.event.draft.key {
            ComponentKey::Model(m) => Some(&m.name),
            _ => None,
        }
    }

    /// The version of a model; null for other kinds.
    async fn version(&self) -> Option<&str> {
        match &self.event.draft.key {
            ComponentKey::Model(m) => Some(&m.version),
            _ => None,
        }
    }

    /// The component's file after the change; null for deletions and components without one.
    async fn file(&self) -> Option<EventFile> {
        self.event.draft.file.as_ref().map(|f| EventFile {
            sha256: f.sha256.clone(),
            size: Long(f.size),
            download_url: self.download_url.clone(),
        })
    }

    /// For `ALIAS_SET` and `ALIAS_DELETED`, the move; null for other events.
    async fn alias(&self) -> Option<EventAlias> {
        self.event.draft.alias.as_ref().map(|a| EventAlias {
            alias: a.alias.clone(),
            from: a.from.clone(),
            to: a.to.clone(),
            by: a.by.clone(),
        })
    }

    /// For `ROLLOUT_STARTED`, `ROLLOUT_CLASS_ABORTED` and `ROLLOUT_ENDED`, the rollout (and for an aborted class,
    /// which, why and the figures); null for other events.
    async fn rollout(&self) -> Option<super::rollouts::EventRollout> {
        self.event
            .draft
            .rollout
            .clone()
            .map(super::rollouts::EventRollout::from)
    }
}

pub type EventConnection = Connection<String, ComponentEvent, EmptyFields>;

fn parse_cursor(after: Option<&str>) -> async_graphql::Result<Option<u64>> {
    after
        .map(|a| {
            a.parse::<u64>().map_err(|_| {
                crate::service::ServiceError::InvalidInput(format!(
                    "after: {a:?} is not an event sequence"
                ))
            })
        })
        .transpose()
        .gql()
}

/// `events(after, first, filter)`: the feed as a Relay connection whose cursors are sequences.
pub async fn events(
    ctx: &Context<'_>,
    after: Option<String>,
    first: Option<i32>,
    filter: Option<EventFilterInput>,
) -> async_graphql::Result<EventConnection> {
    let service = ctx.data::<Arc<RepositoryService>>()?;
    let links = ctx.data::<Links>()?;
    let after_sequence = parse_cursor(after.as_deref())?;
    let filter = filter.unwrap_or_default().into();
    let page = service.events(after_sequence, first, &filter).await.gql()?;
    let mut connection = Connection::new(after.is_some(), page.has_next);
    for event in page.events {
        connection.edges.push(Edge::new(
            event.sequence.to_string(),
            ComponentEvent::new(event, links),
        ));
    }
    // A narrow filter may have read further than the last match: continuing from there skips nothing.
    if let Some(last) = connection.edges.last_mut() {
        if page.end > last.node.event.sequence {
            last.cursor = page.end.to_string();
        }
    } else if page.has_next {
        return Err(crate::service::ServiceError::InvalidInput(format!(
            "no matching event among the events scanned; continue with after: \"{}\"",
            page.end
        )))
        .gql();
    }
    Ok(connection)
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Changes to components: the events after `after` (from now when absent), then each new one as it commits,
    /// in sequence order, each once. `kinds` restricts the kinds of component; `runnableOn` to the transformations,
    /// services and inferencers the device can run before or after the change. An `after` older than the
    /// retained feed fails with `EVENTS_EXPIRED`, one beyond `lastSequence` (a cursor of another feed: see `feedId`)
    /// with `EVENTS_AHEAD`: list the components again, then subscribe from now.
    async fn component_events(
        &self,
        ctx: &Context<'_>,
        after: Option<Long>,
        kinds: Option<Vec<ComponentKind>>,
        runnable_on: Option<DeviceInput>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ComponentEvent>> + use<>>
    {
        let service = ctx.data::<Arc<RepositoryService>>()?.clone();
        let links = ctx.data::<Links>()?.clone();
        let metrics = ctx.data::<Arc<Metrics>>()?.clone();
        let filter = EventFilter {
            kinds: kinds
                .unwrap_or_default()
                .into_iter()
                .map(Kind::from)
                .collect(),
            types: Vec::new(),
            runnable_on: runnable_on
                .map(Device::try_from)
                .transpose()
                .map_err(ServiceError::from)
                .gql()?,
        };
        let stream = service.follow(after.map(|a| a.0), filter).await.gql()?;
        // A shared execution counts each of its subscribers instead (`share.rs`).
        let connected = match ctx.data_opt::<super::share::SharedRun>() {
            Some(shared) => {
                shared.following();
                None
            }
            None => Some(metrics.subscriber("graphql_ws")),
        };
        Ok(stream.map(move |item| {
            let _connected = &connected;
            item.map(|event| ComponentEvent::new(event, &links)).gql()
        }))
    }

    /// The resolution of an inference pipeline for a device (as `resolvePipeline` answers it) now, then again
    /// each time a change to one of its parts, or an alias move of its model, changes what the device would fetch
    /// (the `lock`) or whether it `fits`; changes that alter neither send nothing.
    async fn pipeline_resolutions(
        &self,
        ctx: &Context<'_>,
        device: DeviceInput,
        pipeline: super::pipeline::PipelineInput,
    ) -> async_graphql::Result<
        impl Stream<Item = async_graphql::Result<super::pipeline::PipelineResolution>> + use<>,
    > {
        let service = ctx.data::<Arc<RepositoryService>>()?.clone();
        let links = ctx.data::<Links>()?.clone();
        let metrics = ctx.data::<Arc<Metrics>>()?.clone();
        let device = Device::try_from(device).map_err(ServiceError::from).gql()?;
        let pipeline = pipeline.into_domain().map_err(ServiceError::from).gql()?;
        let stream = service.follow_pipeline(pipeline, device).await.gql()?;
        let connected = metrics.subscriber("graphql_ws");
        Ok(stream.map(move |item| {
            let _connected = &connected;
            item.map(|r| super::pipeline::PipelineResolution::new(r, &links))
                .gql()
        }))
    }
}
