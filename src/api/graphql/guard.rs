//! The guards every GraphQL operation passes inside execution, whichever transport carried it (HTTP, both WebSocket
//! protocols, any later one): the document's size and nesting before it is parsed, authorization per operation,
//! aliases and the complexity budget, a time limit, and the per-request data resolvers rely on. A transport only
//! authenticates (it puts an [`Access`] in the request or connection data); an operation without one is refused.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextRequest, NextSubscribe, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{
    ErrorExtensionValues, Request, Response, ServerError, ServerResult, ValidationResult, Variables,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::budget::RequestBudget;
use super::document::{alias_count, check_nesting};
use super::loader::ModelLoader;
use super::multipart::{MAX_OPERATIONS_BYTES, StagedUploads};
use crate::api::auth::{Access, Need};
use crate::api::error::ApiError;
use crate::api::limits::Limits;
use crate::service::{RepositoryService, ServiceError};

/// Installs the guards in the schema.
#[derive(Debug, Clone)]
pub struct Guard {
    max_aliases: usize,
    max_complexity: usize,
    timeout: Duration,
}

impl Guard {
    pub fn new(limits: &Limits) -> Guard {
        Guard {
            max_aliases: limits.max_aliases,
            max_complexity: limits.max_complexity,
            timeout: limits.request_timeout,
        }
    }
}

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

fn invalid(message: String) -> ServerError {
    ApiError::Service(ServiceError::InvalidInput(message)).into_server_error()
}

/// What an operation of `document` needs: a document with a mutation in it writes (whichever operation runs).
pub fn need_of(document: &ExecutableDocument) -> Need {
    let writes = document
        .operations
        .iter()
        .any(|(_, operation)| operation.node.ty == OperationType::Mutation);
    if writes { Need::Write } else { Need::Read }
}

/// Errors raised by async-graphql itself (syntax, validation, variable coercion) are the client's; they get a code
/// too, so that every error a client sees, over any transport, has `extensions.code`.
fn label_uncoded(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "INVALID_INPUT");
        }
    }
    response
}

#[async_trait::async_trait]
impl Extension for Guard {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        label_uncoded(next.run(ctx).await)
    }

    /// Every answer over a streaming transport (each operation over WebSocket) comes through here.
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(label_uncoded).boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if request.query.len() > MAX_OPERATIONS_BYTES {
            return Err(invalid(format!(
                "the document has {} bytes; at most {MAX_OPERATIONS_BYTES} are allowed",
                request.query.len()
            )));
        }
        // The parser recurses on nesting: a deep document is refused before it is parsed.
        check_nesting(&request.query).map_err(|e| ApiError::Service(e).into_server_error())?;
        if let Some(service) = ctx.data_opt::<Arc<RepositoryService>>() {
            // One loader per request: batching within a response, no cache shared between clients.
            let loader = ModelLoader {
                service: service.clone(),
            };
            request.data.insert(DataLoader::new(loader, tokio::spawn));
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let access = ctx.data_opt::<Access>().ok_or_else(|| {
            // Our fault, not the client's: fail closed, and say so in the log.
            tracing::error!(
                "a transport ran a GraphQL operation without authenticating its sender"
            );
            ApiError::Forbidden("this request was not authenticated".into()).into_server_error()
        })?;
        access
            .allow(need_of(&document))
            .map_err(ApiError::into_server_error)?;
        // (An HTTP batch is also held to the limit as a whole, before any of it runs.)
        let aliases = alias_count(&document);
        if aliases > self.max_aliases {
            return Err(invalid(format!(
                "the request has {aliases} aliases; at most {} are allowed",
                self.max_aliases
            )));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if let Some(budget) = ctx.data_opt::<Arc<RequestBudget>>() {
            budget.spend(result.complexity).map_err(|total| {
                vec![invalid(format!(
                    "the operations of this request have a complexity of at least {total} together; at most \
                     {} is allowed per request",
                    self.max_complexity
                ))]
            })?;
        }
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        // An upload's time depends on its file; its body has the idle timeout instead.
        if ctx.data_opt::<StagedUploads>().is_some() {
            return next.run(ctx, operation_name).await;
        }
        match tokio::time::timeout(self.timeout, next.run(ctx, operation_name)).await {
            Ok(response) => response,
            Err(_) => {
                Response::from_errors(vec![ApiError::Timeout(self.timeout).into_server_error()])
            }
        }
    }
}
