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
/// Longest a GraphQL answer may be. A page of 100 components is far below it; an upstream that sends more (an
/// endless answer) fails the request, read incrementally, so the mirror's memory stays bounded.
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Most of an error answer's body kept for the mirror's status.
const MAX_ERROR_BODY: usize = 4 * 1024;
/// Longest a GraphQL request may take in all: an upstream trickling an answer cannot hold the sync for ever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Components per `runnableOn` page (the upstream's maximum).
const PAGE: usize = 100;
/// Most pages of one listing (200,000 components): an upstream whose pages never end cannot grow the listing, and
/// the mirror's memory, without bound.
const MAX_PAGES: usize = 2_000;
/// Most bytes of answers one listing may take in all (a catalogue of 200,000 typical components takes far less).
const MAX_LISTING_BYTES: usize = 256 * 1024 * 1024;
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
    /// The upstream's feed is not the one the mirror followed (rebuilt, or reset, at the same address): its id
    /// changed, or it has no event at the mirror's sequence. Reconcile in full.
    #[error("the upstream's change feed was reset: {0}")]
    FeedReset(String),
    #[error("the upstream's answer is longer than {limit} bytes; refused")]
    AnswerTooLong { limit: usize },
    #[error(
        "the upstream's listing of {field} does not end (over {MAX_PAGES} pages, or a page repeated); refused"
    )]
    EndlessListing { field: String },
    #[error(
        "the upstream's listing of {field} is larger than asked for (over {PAGE} components a page, or {MAX_LISTING_BYTES} bytes in all); refused"
    )]
    OversizeListing { field: String },
    #[error("the upstream's answer is not JSON: {0}")]
    NotJson(String),
    #[error("the upstream names no feedId (up to 128 bytes): it must be a version that has one")]
    NoFeedId,
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
}

fn feed_id(data: &Value) -> Result<String, UpstreamError> {
    data["feedId"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_owned)
        .ok_or(UpstreamError::NoFeedId)
}

/// Reads at most `limit` bytes of `response`'s body as it arrives; `None` when it is longer.
async fn read_capped(
    response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    use futures_util::StreamExt;
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The start of an error answer, for the status: never the whole of it.
async fn error_body(response: reqwest::Response) -> String {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = MAX_ERROR_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
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
        // No redirects: a lying upstream must not point the site's mirror at other hosts of its network.
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
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
        Ok(self.graphql_sized(query, variables).await?.0)
    }

    /// The `data` of an answer, and how many bytes the answer had.
    async fn graphql_sized(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<(Value, usize), UpstreamError> {
        let request = self
            .http
            .post(format!("{}/graphql", self.base))
            .timeout(ANSWER_TIMEOUT)
            .json(&json!({ "query": query, "variables": variables }));
        let response = self.authorized(request).send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = error_body(response).await;
            return Err(UpstreamError::Status { status, body });
        }
        let bytes =
            read_capped(response, MAX_ANSWER_BYTES)
                .await?
                .ok_or(UpstreamError::AnswerTooLong {
                    limit: MAX_ANSWER_BYTES,
                })?;
        let size = bytes.len();
        let mut body: Value =
            serde_json::from_slice(&bytes).map_err(|e| UpstreamError::NotJson(e.to_string()))?;
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
            let message: String = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(MAX_ERROR_BODY)
                .collect();
            if code == "EVENTS_AHEAD" {
                return Err(UpstreamError::FeedReset(message));
            }
            return Err(UpstreamError::GraphQl { code, message });
        }
        let data = body.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        Ok((data, size))
    }

    /// The newest sequence of the upstream's feed (where to follow from after listing) and the feed's id.
    pub async fn head(&self) -> Result<(u64, String), UpstreamError> {
        let data = self.graphql("{ lastSequence feedId }", json!({})).await?;
        Ok((data["lastSequence"].as_u64().unwrap_or(0), feed_id(&data)?))
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
        let mut cursors = std::collections::HashSet::new();
        let mut listed_bytes = 0usize;
        for _ in 0..MAX_PAGES {
            let (data, size) = self.graphql_sized(query, variables.clone()).await?;
            listed_bytes += size;
            let connection = &data[field];
            let edges = connection["edges"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            // A page holds what was asked for, and a listing what a catalogue of that size takes: a lying upstream
            // cannot grow the mirror's memory past either.
            if edges.len() > PAGE || listed_bytes > MAX_LISTING_BYTES {
                return Err(UpstreamError::OversizeListing {
                    field: field.to_string(),
                });
            }
            for edge in edges {
                found.push(convert::component(&edge["node"])?);
            }
            let info = &connection["pageInfo"];
            match info["endCursor"].as_str() {
                Some(cursor) if info["hasNextPage"].as_bool() == Some(true) => {
                    if !cursors.insert(cursor.to_string()) {
                        break;
                    }
                    variables["after"] = json!(cursor);
                }
                _ => return Ok(found),
            }
        }
        Err(UpstreamError::EndlessListing {
            field: field.to_string(),
        })
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

    /// The versions of model `name` its rollouts keep at the edge: the target of every running or paused
    /// rollout, and that of a completed one while its alias names it (or has yet to be moved to it: the upstream
    /// ends a rollout first and moves its alias just after, recording the outcome in the alias's history).
    pub async fn rollout_targets(&self, name: &str) -> Result<Vec<String>, UpstreamError> {
        let data = match self
            .graphql(
                "query($n: String!) { rollouts(model: $n) { id alias version state } }",
                json!({ "n": name }),
            )
            .await
        {
            Ok(data) => data,
            // An upstream from before rollouts has none to prefetch.
            Err(UpstreamError::GraphQl { message, .. }) if message.starts_with("Unknown field") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let rollouts = data["rollouts"].as_array().map_or(&[][..], Vec::as_slice);
        let mut targets = Vec::new();
        // Only the newest rollout of an alias may have ended without its alias moved yet.
        let mut newest_seen = std::collections::HashSet::new();
        // Where each alias points, asked once per alias however long its history.
        let mut alias_now = std::collections::HashMap::new();
        for rollout in rollouts {
            let (Some(id), Some(alias), Some(version), Some(state)) = (
                rollout["id"].as_str(),
                rollout["alias"].as_str(),
                rollout["version"].as_str(),
                rollout["state"].as_str(),
            ) else {
                continue;
            };
            let newest = newest_seen.insert(alias.to_string());
            let kept = match state {
                "RUNNING" | "PAUSED" => true,
                "COMPLETED" => {
                    if !alias_now.contains_key(alias) {
                        let now = self.alias_version(name, alias).await?;
                        alias_now.insert(alias.to_string(), now);
                    }
                    alias_now[alias].as_deref() == Some(version)
                        || (newest && !self.rollout_settled(name, alias, id).await?)
                }
                _ => false,
            };
            if kept && !targets.iter().any(|t| t == version) {
                targets.push(version.to_string());
            }
        }
        Ok(targets)
    }

    /// The version alias `alias` of model `name` names upstream (the stable one: no device asks).
    async fn alias_version(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<String>, UpstreamError> {
        let data = self
            .graphql(
                "query($n: String!, $a: String!) { model(name: $n, alias: $a) { version } }",
                json!({ "n": name, "a": alias }),
            )
            .await?;
        Ok(data["model"]["version"].as_str().map(str::to_owned))
    }

    /// Whether the upstream applied rollout `id`'s end to its alias: the alias's history records its outcome.
    async fn rollout_settled(
        &self,
        name: &str,
        alias: &str,
        id: &str,
    ) -> Result<bool, UpstreamError> {
        let data = self
            .graphql(
                "query($n: String!, $a: String!) { modelAliasHistory(name: $n, alias: $a) { rollout { id } } }",
                json!({ "n": name, "a": alias }),
            )
            .await?;
        Ok(data["modelAliasHistory"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["rollout"]["id"].as_str() == Some(id)))
    }

    /// Up to [`EVENT_PAGE`] events after `after`, whether there are more, and the id of the feed they are of.
    pub async fn events(
        &self,
        after: u64,
    ) -> Result<(Vec<FeedEvent>, bool, String), UpstreamError> {
        let query = format!(
            "query($after: String) {{ feedId events(after: $after, first: {EVENT_PAGE}) {{ \
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
        Ok((events, more, feed_id(&data)?))
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
                body: error_body(response).await,
            });
        }
        Ok(response)
    }

    /// A download of the bytes with digest `sha256` from `offset` on.
    pub async fn blob(
        &self,
        sha256: &crate::domain::Sha256,
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
                body: error_body(response).await,
            });
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::Upstream;

    /// What the upstream answers: its alias `production` and the rollout ids its history records.
    #[derive(Default)]
    struct Upstate {
        production: &'static str,
        settled: Vec<&'static str>,
    }

    /// An upstream that answers the three queries a mirror asks about rollouts: `r2` completed to v2 (the newest
    /// of `production`), `r1` completed to v3 before it, `r3` runs to v4 on `canary`, `r4` aborted to v5.
    async fn upstream(state: Arc<Mutex<Upstate>>) -> Upstream {
        let graphql = async move |axum::Json(body): axum::Json<Value>| {
            let query = body["query"].as_str().unwrap_or_default();
            let state = state.lock().unwrap();
            let data = if query.contains("rollouts(") {
                json!({ "rollouts": [
                    { "id": "r4", "alias": "beta", "version": "v5", "state": "ABORTED" },
                    { "id": "r3", "alias": "canary", "version": "v4", "state": "RUNNING" },
                    { "id": "r2", "alias": "production", "version": "v2", "state": "COMPLETED" },
                    { "id": "r1", "alias": "production", "version": "v3", "state": "COMPLETED" },
                ] })
            } else if query.contains("modelAliasHistory") {
                let moves: Vec<Value> = state
                    .settled
                    .iter()
                    .map(|id| json!({ "rollout": { "id": id } }))
                    .collect();
                json!({ "modelAliasHistory": moves })
            } else {
                json!({ "model": { "version": state.production } })
            };
            axum::Json(json!({ "data": data }))
        };
        let app = axum::Router::new().route("/graphql", axum::routing::post(graphql));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream::new(&url, None).unwrap()
    }

    #[tokio::test]
    async fn a_completed_rollouts_target_is_kept_until_its_alias_leaves_it() {
        let state = Arc::new(Mutex::new(Upstate {
            production: "v1",
            settled: vec!["r1"],
        }));
        let upstream = upstream(state.clone()).await;
        // Ended, alias not moved yet: the target stays, so the move at the site needs no download.
        assert_eq!(upstream.rollout_targets("det").await.unwrap(), ["v4", "v2"]);
        // Moved: kept while the alias names it.
        *state.lock().unwrap() = Upstate {
            production: "v2",
            settled: vec!["r1", "r2"],
        };
        assert_eq!(upstream.rollout_targets("det").await.unwrap(), ["v4", "v2"]);
        // Moved elsewhere afterwards (back to v1, or to an older rollout's v3).
        for (production, kept) in [("v1", &["v4"][..]), ("v3", &["v4", "v3"][..])] {
            *state.lock().unwrap() = Upstate {
                production,
                settled: vec!["r1", "r2"],
            };
            assert_eq!(upstream.rollout_targets("det").await.unwrap(), kept);
        }
    }
}
