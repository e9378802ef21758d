//! What every handler reaches through axum's state, and how the API links to itself.

use std::sync::Arc;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::graphql::{self, AppSchema};
use super::{auth, limits, metrics};
use crate::domain::ComponentKey;
use crate::service::RepositoryService;

/// How the API builds links to itself.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Prefix of absolute links, such as `https://repo.example.org`; empty for paths relative to the server.
    pub public_url: String,
}

/// Characters escaped in a path segment (RFC 3986 `pchar` keeps the rest).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl Links {
    /// The REST download route of a component.
    pub fn download_url(&self, key: &ComponentKey) -> String {
        let mut url = format!("{}/{}", self.public_url.trim_end_matches('/'), key.kind());
        for segment in key.path_segments() {
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        url
    }
}

impl Links {
    /// The content-addressed download of some bytes.
    pub fn blob_url(&self, sha256: &str) -> String {
        format!(
            "{}/blobs/sha256/{sha256}",
            self.public_url.trim_end_matches('/')
        )
    }

    /// The content-addressed download of a stored file, saved under its own name (`?filename=`).
    pub fn named_blob_url(&self, sha256: &str, filename: &str) -> String {
        let mut url = self.blob_url(sha256);
        if !filename.is_empty() {
            url.push_str("?filename=");
            // A query value: `&`, `=` and `+` must not stand for themselves.
            url.extend(utf8_percent_encode(
                filename,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        url
    }
}

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<RepositoryService>,
    pub schema: AppSchema,
    pub tokens: auth::Tokens,
    pub limits: Arc<limits::Limits>,
    pub metrics: Arc<metrics::Metrics>,
    /// How answers link to downloads (REST's pipeline resolution gives download URLs, as GraphQL does).
    pub links: Links,
    /// GraphQL operations running over WebSocket, per token.
    pub subscriptions: Arc<graphql::OperationCounts>,
    /// Live tails of the change feed over WebSocket that share one execution.
    pub feeds: Arc<graphql::SharedFeeds>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_urls_escape_segments() {
        let links = Links {
            public_url: "https://repo.example/".into(),
        };
        let key = ComponentKey::model("fall detection", "v#1").unwrap();
        assert_eq!(
            links.download_url(&key),
            "https://repo.example/model/fall%20detection/v%231"
        );
        let key = ComponentKey::with_id(crate::domain::Kind::Service, "a.b_c").unwrap();
        assert_eq!(Links::default().download_url(&key), "/service/a.b_c");
    }
}
