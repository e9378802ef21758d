//! The GraphQL API: schema, resolvers, DataLoader and the streaming multipart reader.

mod budget;
mod devices;
mod document;
mod events;
mod guard;
mod http;
mod inputs;
mod loader;
mod mirror;
mod multipart;
mod mutation;
pub(crate) mod pipeline;
mod query;
pub(crate) mod rollouts;
mod share;
pub(crate) mod types;
mod webhooks;
mod ws;

use std::sync::Arc;

use async_graphql::Schema;

pub use self::events::ComponentEvent;
use self::events::SubscriptionRoot;
pub use self::http::graphql_post;
use self::mutation::MutationRoot;
use self::query::QueryRoot;
pub use self::share::SharedFeeds;
pub use self::ws::{OperationCounts, graphql_ws};
use crate::api::limits::Limits;
use crate::api::metrics::Metrics;
use crate::api::state::Links;
use crate::service::RepositoryService;

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The schema with what resolvers reach through the context.
pub fn schema(
    service: Arc<RepositoryService>,
    links: Links,
    limits: &Limits,
    metrics: Arc<Metrics>,
) -> AppSchema {
    let builder = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(service)
        .data(links)
        .data(metrics)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .extension(guard::Guard::new(limits));
    if limits.introspection {
        builder.finish()
    } else {
        // "Did you mean …" would reveal the field names introspection hides.
        builder
            .disable_introspection()
            .disable_suggestions()
            .finish()
    }
}

/// The SDL of the public contract, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .finish()
        .sdl()
}
