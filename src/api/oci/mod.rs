//! The OCI distribution API (spec 1.1, pull), under `/v2/`: every component is an artifact that `oras`, `skopeo`,
//! containerd and the P2P engines in front of registries can pull. Names, tags and the generated manifests are
//! described in `domain::oci`; file bytes are served by the same streaming download as `/blobs/sha256/{hex}`.
//!
//! Authentication is what registries do: the same read and write tokens as every other route, sent as
//! `Authorization: Bearer <token>` or as the password of Basic credentials; without one, a 401 challenges the
//! client to fetch a bearer token from `/v2/token`, which checks the Basic credentials and hands back the token.

mod error;
mod push;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use serde_json::json;

use self::error::{Code, OciError};
use super::auth::Need;
use super::download::{Source, serve};
use super::state::{AppState, Links};
use crate::domain::Sha256;
use crate::domain::oci::{self, Document, Repository};
use crate::service::ServiceError;

/// Largest page of `tags/list` and `_catalog`, and the page size when the client names none.
const MAX_PAGE: usize = 1000;

pub fn routes(links: Links) -> Router<AppState> {
    let pending = std::sync::Arc::new(push::Pending::default());
    let handler =
        move |state: State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body| {
            let (links, pending) = (links.clone(), pending.clone());
            async move {
                let request = Incoming {
                    method: &method,
                    uri: &uri,
                    headers: &headers,
                };
                handle(&state, &links, &pending, request, body)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            }
        };
    Router::new()
        .route("/v2", any(handler.clone()))
        .route("/v2/", any(handler.clone()))
        // Pushed blobs are limited by the upload size limit while they stream, not by a body limit.
        .route("/v2/{*path}", any(handler))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// The parts of a request the routes read, besides its body.
struct Incoming<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

/// What a `/v2/` path asks for.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Base,
    Token,
    Catalog,
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    /// A repository and, after the session's creation, the session's id.
    Upload(&'a str, Option<&'a str>),
    Tags(&'a str),
    Referrers(&'a str, &'a str),
}

/// Splits a path after `/v2/`; repository names hold `/`, references and digests never do.
fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "" => return Some(Route::Base),
        "token" => return Some(Route::Token),
        "_catalog" => return Some(Route::Catalog),
        _ => {}
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some((name, rest)) = path.split_once("/blobs/uploads") {
        let session = rest.trim_start_matches('/');
        return match session {
            "" => Some(Route::Upload(name, None)),
            id if !id.contains('/') => Some(Route::Upload(name, Some(id))),
            _ => None,
        };
    }
    let (rest, last) = path.rsplit_once('/')?;
    let (name, what) = rest.rsplit_once('/')?;
    match what {
        "manifests" => Some(Route::Manifest(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        "referrers" => Some(Route::Referrers(name, last)),
        _ => None,
    }
}

async fn handle(
    state: &AppState,
    links: &Links,
    pending: &push::Pending,
    request: Incoming<'_>,
    body: Body,
) -> Result<Response, OciError> {
    let Incoming {
        method,
        uri,
        headers,
    } = request;
    let path = uri.path().strip_prefix("/v2").unwrap_or_default();
    let path = path.strip_prefix('/').unwrap_or(path);
    let route = route(path).ok_or_else(|| OciError::new(Code::NotFound, "no such OCI route"))?;
    let challenge = || challenge(links, headers);
    if route == Route::Token {
        return token(state, headers, challenge());
    }
    let need = match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Need::Read,
        _ => Need::Write,
    };
    let access = state
        .tokens
        .access(&as_bearer(headers))
        .and_then(|access| access.allow(need).map(|()| access))
        .map_err(|e| OciError::from_api(e).with_challenge(challenge()))?;
    let query = Query::parse(uri);
    match (&route, method) {
        (Route::Upload(name, session), _) => {
            return push::upload(
                state,
                pending,
                &access.caller,
                method,
                headers,
                name,
                *session,
                query.digest.as_deref(),
                body,
            )
            .await;
        }
        (Route::Manifest(name, reference), &Method::PUT) => {
            return push::manifest(state, pending, headers, name, reference, body).await;
        }
        (_, &Method::GET | &Method::HEAD) => {}
        _ => {
            return Err(OciError::new(
                Code::Unsupported,
                "this registry takes pushes of models (blob uploads and manifest PUT) only",
            ));
        }
    }
    match route {
        Route::Base => Ok(with_api_version(json_response(
            StatusCode::OK,
            "application/json",
            b"{}".to_vec(),
        ))),
        // Answered before authorization; kept total rather than panicking.
        Route::Token => token(state, headers, challenge()),
        Route::Catalog => {
            let (n, last) = query.page()?;
            let names = state.service.oci_catalog(last, n + 1).await?;
            let (names, link) = page_of(names, n, "/v2/_catalog");
            Ok(listing(json!({ "repositories": names }), link))
        }
        Route::Tags(name) => {
            let repo = repository(name)?;
            let (n, last) = query.page()?;
            let tags = state
                .service
                .oci_tags(&repo, last, n + 1)
                .await?
                .ok_or_else(|| OciError::new(Code::NameUnknown, format!("no repository {name}")))?;
            let (tags, link) = page_of(tags, n, &format!("/v2/{name}/tags/list"));
            Ok(listing(json!({ "name": name, "tags": tags }), link))
        }
        Route::Manifest(name, reference) => {
            let repo = repository(name)?;
            check_reference(reference)?;
            // A device pulling an alias's tag names itself for its rollout cohort: `?device=` or, for clients that
            // can only add headers (containerd's hosts.toml), `X-Device-Id`.
            let device = headers
                .get("x-device-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or(query.device.clone());
            if let Some(id) = &device {
                crate::domain::device_report::validate_device_id(id).map_err(|e| {
                    OciError::new(
                        Code::Other(StatusCode::BAD_REQUEST, "INVALID_INPUT"),
                        e.to_string(),
                    )
                })?;
            }
            let document = state
                .service
                .oci_manifest(&repo, reference, device.as_deref())
                .await
                .map_err(|e| OciError::service(e, Code::ManifestUnknown))?;
            let mut response = document_response(&document, headers);
            if !reference.contains(':') {
                // What a tag (not a digest) names may differ by device (rollout cohorts): caches must key on the
                // header too.
                set(&mut response, header::VARY.as_str(), "X-Device-Id");
            }
            Ok(response)
        }
        Route::Blob(name, digest) => {
            let repo = repository(name)?;
            blob(
                state,
                pending,
                &repo,
                digest,
                request_is_head(method),
                headers,
            )
            .await
        }
        Route::Referrers(name, digest) => {
            let repo = repository(name)?;
            sha256_of(digest)?;
            let index = state
                .service
                .oci_referrers(&repo, digest, query.artifact_type.as_deref())
                .await?;
            let mut response = document_response(&index, headers);
            response.headers_mut().remove("docker-content-digest");
            if query.artifact_type.is_some() {
                response.headers_mut().insert(
                    "oci-filters-applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            Ok(response)
        }
        // Answered with the other methods above; kept total rather than panicking.
        Route::Upload(..) => Err(OciError::new(
            Code::Unsupported,
            "uploads take POST, PATCH, PUT, GET and DELETE",
        )),
    }
}

/// `GET /v2/<name>/blobs/<digest>`: a file's bytes (with ranges) by digest, or a generated config.
fn request_is_head(method: &Method) -> bool {
    method == Method::HEAD
}

async fn blob(
    state: &AppState,
    pending: &push::Pending,
    repo: &Repository,
    digest: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, OciError> {
    let sha256 = sha256_of(digest)?;
    match state.service.blob(&sha256).await {
        Ok(file) => {
            let mut response = serve(
                &state.service,
                &state.metrics,
                Source::Digest,
                &file,
                headers,
            )
            .await
            .map_err(OciError::from_api)?;
            set(&mut response, "docker-content-digest", digest);
            set(
                &mut response,
                header::CACHE_CONTROL.as_str(),
                "public, max-age=31536000, immutable",
            );
            return Ok(response);
        }
        Err(ServiceError::NotFound(_)) => {}
        Err(e) => return Err(OciError::service(e, Code::BlobUnknown)),
    }
    match state.service.oci_config(repo, digest).await? {
        Some(config) => Ok(document_response(&config, headers)),
        // A pushed blob waiting for its manifest exists for clients that check before they upload.
        None if head && pending.blob_size(&repo.oci_name(), digest).is_some() => {
            let size = pending.blob_size(&repo.oci_name(), digest).unwrap_or(0);
            let mut response = StatusCode::OK.into_response();
            set(
                &mut response,
                header::CONTENT_LENGTH.as_str(),
                &size.to_string(),
            );
            set(&mut response, "docker-content-digest", digest);
            Ok(response)
        }
        None => Err(OciError::new(
            Code::BlobUnknown,
            format!("{} has no blob {digest}", repo.oci_name()),
        )),
    }
}

/// A generated document with its digest, as an ETag too.
fn document_response(document: &Document, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", document.digest);
    let matched = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matched {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_response(StatusCode::OK, &document.media_type, document.bytes.clone())
    };
    set(&mut response, "docker-content-digest", &document.digest);
    set(&mut response, header::ETAG.as_str(), &etag);
    response
}

fn json_response(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response {
    let length = bytes.len();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    set(&mut response, header::CONTENT_TYPE.as_str(), content_type);
    set(
        &mut response,
        header::CONTENT_LENGTH.as_str(),
        &length.to_string(),
    );
    response
}

/// The first `n` of `items` (which holds up to `n + 1`), and the `Link` to the next page when there is one.
fn page_of(mut items: Vec<String>, n: usize, path: &str) -> (Vec<String>, Option<String>) {
    let more = items.len() > n;
    items.truncate(n);
    let link = match (more, items.last()) {
        (true, Some(last)) => Some(format!(
            "<{path}?n={n}&last={}>; rel=\"next\"",
            percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC)
        )),
        _ => None,
    };
    (items, link)
}

fn listing(body: serde_json::Value, link: Option<String>) -> Response {
    let mut response = json_response(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    if let Some(link) = link {
        set(&mut response, header::LINK.as_str(), &link);
    }
    response
}

fn set(response: &mut Response, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        header::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        response.headers_mut().insert(name, value);
    }
}

fn with_api_version(mut response: Response) -> Response {
    set(
        &mut response,
        "docker-distribution-api-version",
        "registry/2.0",
    );
    response
}

fn repository(name: &str) -> Result<Repository, OciError> {
    Repository::parse(name).ok_or_else(|| {
        OciError::new(
            Code::NameInvalid,
            format!(
                "{name:?} is not a repository here: models/<name>, transformations/<id>, services/<id> or \
                 inferencers/<id>, escaped as the README's \"OCI clients\" says"
            ),
        )
    })
}

fn check_reference(reference: &str) -> Result<(), OciError> {
    if reference.contains(':') {
        sha256_of(reference).map(|_| ())
    } else if oci::decode_tag(reference).is_some() {
        Ok(())
    } else {
        Err(OciError::new(
            Code::TagInvalid,
            format!("{reference:?} is not a tag"),
        ))
    }
}

/// The sha256 of a `sha256:<hex>` digest.
fn sha256_of(digest: &str) -> Result<Sha256, OciError> {
    digest
        .strip_prefix("sha256:")
        .and_then(|hex| Sha256::parse(hex).ok())
        .ok_or_else(|| {
            OciError::new(
                Code::DigestInvalid,
                format!("{digest:?} is not a sha256 digest (sha256:<64 lower-case hex digits>)"),
            )
        })
}

/// `n` and `last` of a listing, `artifactType` of the referrers.
#[derive(Default)]
struct Query {
    n: Option<String>,
    last: Option<String>,
    artifact_type: Option<String>,
    digest: Option<String>,
    device: Option<String>,
}

impl Query {
    fn parse(uri: &Uri) -> Self {
        let mut parsed = Query::default();
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "n" => &mut parsed.n,
                "last" => &mut parsed.last,
                "artifactType" => &mut parsed.artifact_type,
                "digest" => &mut parsed.digest,
                "device" => &mut parsed.device,
                _ => continue,
            };
            *slot = Some(value);
        }
        parsed
    }

    fn page(&self) -> Result<(usize, Option<&str>), OciError> {
        let n = match &self.n {
            None => MAX_PAGE,
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_PAGE)
                .ok_or_else(|| {
                    OciError::new(
                        Code::PaginationNumberInvalid,
                        format!("n must be a number from 0 to {MAX_PAGE}"),
                    )
                })?,
        };
        Ok((n, self.last.as_deref()))
    }
}

/// The `WWW-Authenticate` challenge pointing at this server's token endpoint.
fn challenge(links: &Links, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.contains(['"', '\\']))
        .unwrap_or("localhost");
    let base = match links.public_url.trim_end_matches('/') {
        "" => format!("http://{host}"),
        public => public.to_string(),
    };
    let service = base
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&base)
        .split('/')
        .next()
        .unwrap_or(host)
        .to_string();
    format!("Bearer realm=\"{base}/v2/token\",service=\"{service}\"")
}

/// Basic credentials carry the token as their password: seen as the bearer token they hold.
fn as_bearer(headers: &HeaderMap) -> HeaderMap {
    let Some(password) = basic_password(headers) else {
        return headers.clone();
    };
    let mut headers = headers.clone();
    match HeaderValue::from_str(&format!("Bearer {password}")) {
        Ok(value) => headers.insert(header::AUTHORIZATION, value),
        // A password that cannot be a header value cannot be a token either.
        Err(_) => headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer invalid"),
        ),
    };
    headers
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded
        .split_once(':')
        .map(|(_, password)| password.to_string())
}

/// `GET /v2/token`: checks the credentials and hands back the token they hold, as registries' token servers do.
/// Without tokens configured (or with public reads and no credentials) the token is empty: nothing is needed.
fn token(state: &AppState, headers: &HeaderMap, challenge: String) -> Result<Response, OciError> {
    let headers = as_bearer(headers);
    let access = state
        .tokens
        .access(&headers)
        .map_err(|e| OciError::from_api(e).with_challenge(challenge.clone()))?;
    if !access.allows(Need::Read) {
        return Err(OciError::new(
            Code::Unauthorized,
            "send the token as the password of Basic credentials (any user name)",
        )
        .with_challenge(challenge));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, token)| token.trim().to_string())
        .unwrap_or_default();
    let body = json!({ "token": token, "access_token": token, "expires_in": 3600 });
    let mut response = json_response(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    set(&mut response, header::CACHE_CONTROL.as_str(), "no-store");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_routes() {
        assert_eq!(route(""), Some(Route::Base));
        assert_eq!(
            route("models/manifests/manifests/latest"),
            Some(Route::Manifest("models/manifests", "latest"))
        );
        assert_eq!(
            route("services/a.b/blobs/sha256:00"),
            Some(Route::Blob("services/a.b", "sha256:00"))
        );
        assert_eq!(
            route("models/m/blobs/uploads/"),
            Some(Route::Upload("models/m", None))
        );
        assert_eq!(
            route("models/m/blobs/uploads/abc"),
            Some(Route::Upload("models/m", Some("abc")))
        );
        assert_eq!(route("models/m/tags/list"), Some(Route::Tags("models/m")));
        assert_eq!(
            route("models/m/referrers/sha256:1"),
            Some(Route::Referrers("models/m", "sha256:1"))
        );
        assert_eq!(route("models/m/other/x"), None);
    }

    #[test]
    fn basic_credentials_carry_the_token() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret:x");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        assert_eq!(basic_password(&headers).as_deref(), Some("s3cret:x"));
        assert_eq!(
            as_bearer(&headers).get(header::AUTHORIZATION).unwrap(),
            "Bearer s3cret:x"
        );
    }
}
