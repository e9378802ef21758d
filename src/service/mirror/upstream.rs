//! The upstream repository as the mirror talks to it: GraphQL for listings, components and the change feed,
//! `/events` (SSE) to learn at once that there is more, `/blobs/sha256/{hex}` for bytes.

use std::time::Duration;

use serde_json::{Value, json};

use super::convert::{self, Unreadable};
use crate::domain::{Component, ComponentKey};

/// No connection within this long: the upstream is unreachable for now.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// No bytes for this long on a request (a stalled link): the request fails and is retried. SSE heartbeats come
/// every 15 s, so an open event stream stays well inside it.
const READ_TIMEOUT: Duration = Duration::from_secs(40);
/// Components per `runnableOn` page (the upstream's maximum).
const PAGE: usize = 100;
/// Events per page of the feed.
pub const EVENT_PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream cannot be reached: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("the upstream answered {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    /// The upstream's feed no longer holds the events after the mirror's sequence: reconcile in full.
    #[error("the upstream's change feed no longer holds the events the mirror needs")]
    EventsExpired,
    #[error("the upstream refused a query ({code}): {message}")]
    GraphQl { code: String, message: String },
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
}

/// One event of the upstream's feed, as far as the mirror needs it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub sequence: u64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub deleted: bool,
    pub key: ComponentKey,
}

#[derive(Clone)]
pub struct Upstream {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// The event stream has no read timeout of its own: heartbeats are watched by the reader.
    stream_http: reqwest::Client,
}

impl Upstream {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            stream_http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn graphql(&self, query: &str, variables: Value) -> Result<Value, UpstreamError> {
        let request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        let response = self.authorized(request).send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(UpstreamError::Status { status, body });
        }
        let mut body: Value = response.json().await?;
        if let Some(error) = body
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            let code = error
                .pointer("/extensions/code")
                .and_then(Value::as_str)
                .unwrap_or("UNKNOWN")
                .to_string();
            if code == "EVENTS_EXPIRED" {
                return Err(UpstreamError::EventsExpired);
            }
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            return Err(UpstreamError::GraphQl { code, message });
        }
        Ok(body.get_mut("data").map(Value::take).unwrap_or(Value::Null))
    }

    /// The newest sequence of the upstream's feed: where to follow from after listing.
    pub async fn last_sequence(&self) -> Result<u64, UpstreamError> {
        let data = self.graphql("{ lastSequence }", json!({})).await?;
        Ok(data["lastSequence"].as_u64().unwrap_or(0))
    }

    /// Every component `device` (a `DeviceInput` as JSON) can run, page by page.
    pub async fn runnable_on(&self, device: &Value) -> Result<Vec<Component>, UpstreamError> {
        let query = format!(
            "query($device: DeviceInput!, $after: String) {{ runnableOn(device: $device, first: {PAGE}, \
             after: $after) {{ pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {} }} }} }} }}",
            convert::selection()
        );
        self.pages(&query, "runnableOn", json!({ "device": device }))
            .await
    }

    /// Every version of model `name`.
    pub async fn model_versions(&self, name: &str) -> Result<Vec<Component>, UpstreamError> {
        let query = format!(
            "query($name: String!, $after: String) {{ models(filter: {{name: $name}}, first: {PAGE}, \
             after: $after) {{ pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {} }} }} }} }}",
            convert::fields(crate::domain::Kind::Model)
        );
        self.pages(&query, "models", json!({ "name": name })).await
    }

    async fn pages(
        &self,
        query: &str,
        field: &str,
        mut variables: Value,
    ) -> Result<Vec<Component>, UpstreamError> {
        let mut found = Vec::new();
        loop {
            let data = self.graphql(query, variables.clone()).await?;
            let connection = &data[field];
            for edge in connection["edges"].as_array().into_iter().flatten() {
                found.push(convert::component(&edge["node"])?);
            }
            let info = &connection["pageInfo"];
            match info["endCursor"].as_str() {
                Some(cursor) if info["hasNextPage"].as_bool() == Some(true) => {
                    variables["after"] = json!(cursor);
                }
                _ => return Ok(found),
            }
        }
    }

    /// The component under `key` as the upstream holds it now; `None` when it is gone.
    pub async fn component(&self, key: &ComponentKey) -> Result<Option<Component>, UpstreamError> {
        let (field, args, variables) = match key {
            ComponentKey::Model(m) => (
                "model",
                "(name: $a, version: $b)",
                json!({ "a": m.name, "b": m.version }),
            ),
            other => (
                other.kind().as_str(),
                "(id: $a)",
                json!({ "a": other.path_segments()[0] }),
            ),
        };
        let declared = match key {
            ComponentKey::Model(_) => "($a: String!, $b: String!)",
            _ => "($a: ID!)",
        };
        let query = format!(
            "query{declared} {{ c: {field}{args} {{ {} }} }}",
            convert::fields(key.kind())
        );
        let data = self.graphql(&query, variables).await?;
        match &data["c"] {
            Value::Null => Ok(None),
            node => Ok(Some(convert::component(node)?)),
        }
    }

    /// Up to [`EVENT_PAGE`] events after `after`, and whether there are more.
    pub async fn events(&self, after: u64) -> Result<(Vec<FeedEvent>, bool), UpstreamError> {
        let query = format!(
            "query($after: String) {{ events(after: $after, first: {EVENT_PAGE}) {{ \
             pageInfo {{ hasNextPage }} nodes {{ sequence at type kind id name version }} }} }}"
        );
        let data = self
            .graphql(&query, json!({ "after": after.to_string() }))
            .await?;
        let connection = &data["events"];
        let mut events = Vec::new();
        for node in connection["nodes"].as_array().into_iter().flatten() {
            let kind = node["kind"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let key = match kind.as_str() {
                "model" => ComponentKey::model(
                    node["name"].as_str().unwrap_or_default(),
                    node["version"].as_str().unwrap_or_default(),
                ),
                other => match crate::domain::Kind::parse(other) {
                    Some(kind) => {
                        ComponentKey::with_id(kind, node["id"].as_str().unwrap_or_default())
                    }
                    None => continue,
                },
            };
            let Ok(key) = key else { continue };
            events.push(FeedEvent {
                sequence: node["sequence"].as_u64().unwrap_or(0),
                at: node["at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_else(chrono::Utc::now),
                deleted: node["type"].as_str() == Some("DELETED"),
                key,
            });
        }
        let more = connection["pageInfo"]["hasNextPage"].as_bool() == Some(true);
        Ok((events, more))
    }

    /// Opens the upstream's event stream from now (`/events`): every line that arrives says the feed moved.
    pub async fn event_stream(&self) -> Result<reqwest::Response, UpstreamError> {
        let request = self
            .stream_http
            .get(format!("{}/events", self.base))
            .header("accept", "text/event-stream");
        let response = self.authorized(request).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(UpstreamError::Status {
                status,
                body: response.text().await.unwrap_or_default(),
            });
        }
        Ok(response)
    }

    /// A download of the bytes with digest `sha256` from `offset` on.
    pub async fn blob(
        &self,
        sha256: &str,
        offset: u64,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut request = self
            .http
            .get(format!("{}/blobs/sha256/{sha256}", self.base));
        if offset > 0 {
            request = request.header("range", format!("bytes={offset}-"));
        }
        let response = self.authorized(request).send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status {
                status,
                body: response.text().await.unwrap_or_default(),
            });
        }
        Ok(response)
    }
}
