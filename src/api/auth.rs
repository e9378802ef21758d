//! Optional bearer tokens. With tokens configured, every write (a GraphQL mutation, a REST POST/PUT/DELETE) needs a
//! write token, and every read needs a read or write token unless reads are public. Tokens are kept only as
//! sha256 digests and compared in constant time; they never reach a log line.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    Read,
    /// A device's report of itself (`POST /devices/{id}/report`): device and write tokens.
    Report,
    Write,
}

#[derive(Clone, Default)]
pub struct Tokens {
    read: Vec<[u8; 32]>,
    write: Vec<[u8; 32]>,
    /// Tokens of devices: they read and report, nothing else.
    device: Vec<[u8; 32]>,
    /// A name per token, in the order of `write`, `read` then `device`: what records of who did what say.
    labels: Vec<String>,
    public_reads: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` is one of `digests`, looking at every one of them whatever matches.
fn contains(digests: &[[u8; 32]], presented: &[u8; 32]) -> bool {
    let found = digests
        .iter()
        .fold(Choice::from(0), |found, d| found | d.ct_eq(presented));
    found.into()
}

impl Tokens {
    /// Tokens from the command line or environment, plus those of a tokens file (`read <token> [label]` or
    /// `write <token> [label]` per line; `#` starts a comment). A token without a label is called
    /// `write-token-N` / `read-token-N` by its position.
    pub fn new(
        read: &[String],
        write: &[String],
        file: Option<&Path>,
        public_reads: bool,
    ) -> anyhow::Result<Tokens> {
        let mut write_tokens: Vec<(String, Option<String>)> = write
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| (t.clone(), None))
            .collect();
        let mut read_tokens: Vec<(String, Option<String>)> = read
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| (t.clone(), None))
            .collect();
        let mut device_tokens: Vec<(String, Option<String>)> = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading the tokens file {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut words = line.split_whitespace();
                let (scope, token) = (words.next(), words.next());
                let label = words.collect::<Vec<_>>().join(" ");
                let label = Some(label).filter(|l| !l.is_empty());
                match (scope, token) {
                    (Some("read"), Some(token)) => read_tokens.push((token.to_string(), label)),
                    (Some("write"), Some(token)) => write_tokens.push((token.to_string(), label)),
                    (Some("device"), Some(token)) => device_tokens.push((token.to_string(), label)),
                    // The line may hold a token: say where, never what.
                    _ => anyhow::bail!(
                        "{} line {}: expected `read <token> [label]`, `write <token> [label]` or \
                         `device <token> [label]`",
                        path.display(),
                        n + 1
                    ),
                }
            }
        }
        let name = |scope: &str, i: usize, label: &Option<String>| {
            label
                .clone()
                .unwrap_or_else(|| format!("{scope}-token-{}", i + 1))
        };
        let tokens = Tokens {
            read: read_tokens.iter().map(|(t, _)| digest(t)).collect(),
            write: write_tokens.iter().map(|(t, _)| digest(t)).collect(),
            device: device_tokens.iter().map(|(t, _)| digest(t)).collect(),
            labels: write_tokens
                .iter()
                .enumerate()
                .map(|(i, (_, l))| name("write", i, l))
                .chain(
                    read_tokens
                        .iter()
                        .enumerate()
                        .map(|(i, (_, l))| name("read", i, l)),
                )
                .chain(
                    device_tokens
                        .iter()
                        .enumerate()
                        .map(|(i, (_, l))| name("device", i, l)),
                )
                .collect(),
            public_reads,
        };
        Ok(tokens)
    }

    /// Adds device tokens (`--device-tokens`), after those of the tokens file.
    pub fn with_device_tokens(mut self, tokens: &[String]) -> Tokens {
        let first = self.device.len();
        for (i, token) in tokens.iter().filter(|t| !t.is_empty()).enumerate() {
            self.device.push(digest(token));
            self.labels.push(format!("device-token-{}", first + i + 1));
        }
        self
    }

    /// The label of the token a request presents: `anonymous` without tokens configured or without a valid
    /// token. Every token is compared, whichever matches, so the answer's timing tells nothing.
    pub fn label(&self, headers: &HeaderMap) -> String {
        let Some(token) = bearer(headers) else {
            return "anonymous".into();
        };
        let presented = digest(token);
        let mut found = u64::MAX;
        let all = self.write.iter().chain(&self.read).chain(&self.device);
        for (i, d) in all.enumerate() {
            found = u64::conditional_select(&found, &(i as u64), d.ct_eq(&presented));
        }
        self.labels
            .get(found as usize)
            .cloned()
            .unwrap_or_else(|| "anonymous".into())
    }

    pub fn enabled(&self) -> bool {
        !self.read.is_empty() || !self.write.is_empty() || !self.device.is_empty()
    }

    /// For the start-up log: how many tokens, never which.
    pub fn summary(&self) -> String {
        if !self.enabled() {
            return "off: no tokens configured, everything is open".into();
        }
        let devices = match self.device.len() {
            0 => String::new(),
            n => format!(", {n} device tokens"),
        };
        format!(
            "{} write and {} read tokens{devices}; reads {}",
            self.write.len(),
            self.read.len(),
            if self.public_reads {
                "public"
            } else {
                "need a token"
            }
        )
    }

    /// Who presents `headers`: what they may do and their label for records. Refuses a token that is not valid;
    /// a request without one gets reads when reads are public (or no tokens are configured), and nothing otherwise.
    pub fn access(&self, headers: &HeaderMap) -> Result<Access, ApiError> {
        if !self.enabled() {
            return Ok(Access::open());
        }
        if headers.get(header::AUTHORIZATION).is_none() {
            return Ok(Access {
                grant: self.public_reads.then_some(Need::Read),
                token: false,
                caller: "anonymous".into(),
            });
        }
        let token = bearer(headers).ok_or_else(|| {
            ApiError::Unauthenticated(
                "the Authorization header is not of the form `Bearer <token>`".into(),
            )
        })?;
        let presented = digest(token);
        let grant = if contains(&self.write, &presented) {
            Need::Write
        } else if contains(&self.device, &presented) {
            Need::Report
        } else if contains(&self.read, &presented) {
            Need::Read
        } else {
            return Err(ApiError::Unauthenticated(
                "the bearer token is not valid".into(),
            ));
        };
        Ok(Access {
            grant: Some(grant),
            token: true,
            caller: self.label(headers),
        })
    }

    /// Lets the request through, or says why not (401 without a valid token, 403 for a read token that writes).
    pub fn check(&self, headers: &HeaderMap, need: Need) -> Result<(), ApiError> {
        self.access(headers)?.allow(need)
    }
}

/// What the sender of a request may do, as its transport authenticated it. GraphQL execution asks it for every
/// operation (`graphql::guard`), whichever transport carried the operation; a request without one is refused.
#[derive(Debug, Clone)]
pub struct Access {
    /// The most the sender may do; `None` for nothing at all.
    grant: Option<Need>,
    /// Whether a (valid) token was presented: without one, a refusal says how to authenticate (401), with one that
    /// the token does not allow it (403).
    token: bool,
    /// The token's label, `anonymous` without one: who made a change, for its records.
    pub caller: String,
}

impl Access {
    /// Everything, for a server without tokens.
    pub fn open() -> Access {
        Access {
            grant: Some(Need::Write),
            token: false,
            caller: "anonymous".into(),
        }
    }

    /// What the access allows and how a refusal would read, without who it is: two senders with the same scope get
    /// the same answer to the same read-only operation (the label only records who made a change).
    pub fn scope(&self) -> String {
        format!("{:?}/{}", self.grant, self.token)
    }

    pub fn allows(&self, need: Need) -> bool {
        self.grant.is_some_and(|grant| grant >= need)
    }

    /// `Ok` when the sender may do what `need` says; otherwise 401 (no token) or 403 (a token that cannot).
    pub fn allow(&self, need: Need) -> Result<(), ApiError> {
        if self.allows(need) {
            Ok(())
        } else if !self.token {
            Err(ApiError::Unauthenticated(
                "this server needs a bearer token: send `Authorization: Bearer <token>`".into(),
            ))
        } else if self.grant == Some(Need::Report) {
            Err(ApiError::Forbidden(
                "this device token can only read and report: changes need a write token".into(),
            ))
        } else if need == Need::Report {
            Err(ApiError::Forbidden(
                "this token can only read: device reports need a device or write token".into(),
            ))
        } else {
            Err(ApiError::Forbidden(
                "this token can only read: changes need a write token".into(),
            ))
        }
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// Whether a request is a device's report of itself: `POST /devices/{id}/report`.
fn is_device_report(method: &Method, path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    *method == Method::POST
        && segments.next() == Some("devices")
        && segments.next().is_some_and(|id| !id.is_empty())
        && segments.next() == Some("report")
        && segments.next().is_none()
}

/// REST routes that take a POST only because their question is a body: they read, like a GET.
pub const POST_READS: [&str; 1] = ["/pipelines/resolve"];

/// For REST routes: GET and HEAD read, and the [`POST_READS`]; a device report reports; everything else writes.
pub async fn rest_guard(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let need = match *request.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => Need::Read,
        Method::POST if POST_READS.contains(&request.uri().path()) => Need::Read,
        ref method if is_device_report(method, request.uri().path()) => Need::Report,
        _ => Need::Write,
    };
    match tokens.check(request.headers(), need) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn no_tokens_means_open() {
        let tokens = Tokens::default();
        assert!(tokens.check(&headers(None), Need::Write).is_ok());
    }

    #[test]
    fn read_and_write_tokens_grant_what_they_say() {
        let tokens = Tokens::new(&["r".into()], &["w".into()], None, false).unwrap();
        assert!(matches!(
            tokens.check(&headers(None), Need::Read),
            Err(ApiError::Unauthenticated(_))
        ));
        assert!(tokens.check(&headers(Some("r")), Need::Read).is_ok());
        assert!(matches!(
            tokens.check(&headers(Some("r")), Need::Write),
            Err(ApiError::Forbidden(_))
        ));
        assert!(tokens.check(&headers(Some("w")), Need::Write).is_ok());
        assert!(tokens.check(&headers(Some("w")), Need::Read).is_ok());
        assert!(matches!(
            tokens.check(&headers(Some("x")), Need::Read),
            Err(ApiError::Unauthenticated(_))
        ));
    }

    #[test]
    fn device_tokens_read_and_report_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "device d1 jetson fleet\nread r1\n").unwrap();
        let tokens = Tokens::new(&[], &["w".into()], Some(&path), false)
            .unwrap()
            .with_device_tokens(&["d2".into()]);
        for device in ["d1", "d2"] {
            assert!(tokens.check(&headers(Some(device)), Need::Read).is_ok());
            assert!(tokens.check(&headers(Some(device)), Need::Report).is_ok());
            assert!(matches!(
                tokens.check(&headers(Some(device)), Need::Write),
                Err(ApiError::Forbidden(_))
            ));
        }
        assert!(matches!(
            tokens.check(&headers(Some("r1")), Need::Report),
            Err(ApiError::Forbidden(_))
        ));
        assert!(tokens.check(&headers(Some("w")), Need::Report).is_ok());
        assert_eq!(tokens.label(&headers(Some("d1"))), "jetson fleet");
        assert_eq!(tokens.label(&headers(Some("d2"))), "device-token-2");
        assert!(is_device_report(&Method::POST, "/devices/cam-7/report"));
        assert!(!is_device_report(&Method::POST, "/devices/cam-7/report/x"));
        assert!(!is_device_report(&Method::POST, "/model/devices/report"));
        assert!(!is_device_report(&Method::DELETE, "/devices/cam-7/report"));
    }

    #[test]
    fn public_reads_need_no_token() {
        let tokens = Tokens::new(&[], &["w".into()], None, true).unwrap();
        assert!(tokens.check(&headers(None), Need::Read).is_ok());
        assert!(tokens.check(&headers(None), Need::Write).is_err());
    }

    #[test]
    fn a_bad_tokens_file_line_names_the_line_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# ops\nwrite w1\nread r1\nsuper-secret\n").unwrap();
        let error = Tokens::new(&[], &[], Some(&path), false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 4") && !error.contains("super-secret"),
            "{error}"
        );
        std::fs::write(&path, "write w1\nread r1\n").unwrap();
        let tokens = Tokens::new(&[], &[], Some(&path), false).unwrap();
        assert!(tokens.check(&headers(Some("r1")), Need::Read).is_ok());
        assert!(tokens.check(&headers(Some("w1")), Need::Write).is_ok());
    }

    #[test]
    fn tokens_have_labels_never_their_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "write w1 release bot
read r1
",
        )
        .unwrap();
        let tokens = Tokens::new(&[], &["cli".into()], Some(&path), false).unwrap();
        assert_eq!(tokens.label(&headers(Some("w1"))), "release bot");
        assert_eq!(tokens.label(&headers(Some("cli"))), "write-token-1");
        assert_eq!(tokens.label(&headers(Some("r1"))), "read-token-1");
        assert_eq!(tokens.label(&headers(Some("nope"))), "anonymous");
        assert_eq!(tokens.label(&headers(None)), "anonymous");
        assert!(tokens.check(&headers(Some("w1")), Need::Write).is_ok());
    }
}
