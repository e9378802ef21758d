//! The server's configuration as plain values. `cli` builds it once from `serve`'s flags and environment (every
//! check and clamp happens there); tests and examples set its fields. `server` starts from it and never sees the
//! command line. Each default is the default of the matching flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::auth::Tokens;
use crate::api::limits::Limits;
use crate::domain::ComponentKey;
use crate::service::mirror::MirrorDevice;
use crate::service::uploads::{DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TTL};
use crate::service::webhooks::WebhookConfig;
use crate::store::EventRetention;
use crate::store::mongodb::MongoConfig;

/// Everything `serve` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// Prefix of absolute download links (`https://repo.example.org`); empty for paths relative to the server.
    pub public_url: String,
    /// A tracing filter (`info`, `component_repository=debug`); `RUST_LOG` takes precedence.
    pub log_level: String,
    pub store: StoreConfig,
    /// Bearer tokens (none: everyone may read and write).
    pub auth: Tokens,
    /// GraphQL and HTTP request limits, CORS, WebSocket limits.
    pub limits: Limits,
    pub uploads: Uploads,
    /// Once uploaded, a file cannot be replaced and a component with a file cannot be deleted.
    pub immutable_files: bool,
    pub events: Events,
    pub webhooks: WebhookConfig,
    /// Set on an edge mirror of another repository.
    pub mirror: Option<Mirror>,
    pub connections: Connections,
    pub signatures: Signatures,
    /// How long a device report keeps its device live (`--device-report-ttl`); older reports are ignored and swept.
    pub device_report_ttl: std::time::Duration,
    /// How often open rollouts step (`--rollout-tick`).
    pub rollout_tick: std::time::Duration,
}

/// Signatures of files: the trust policy (`--trust-policy`) and what to do with it (`--signatures`).
#[derive(Debug, Clone, Default)]
pub struct Signatures {
    /// `None`: audit when a policy is given, else off.
    pub mode: Option<crate::service::signing::SignatureMode>,
    pub trust_policy: Option<PathBuf>,
}

impl Signatures {
    pub fn mode(&self) -> crate::service::signing::SignatureMode {
        use crate::service::signing::SignatureMode;
        self.mode.unwrap_or(if self.trust_policy.is_some() {
            SignatureMode::Audit
        } else {
            SignatureMode::Off
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 8000)),
            public_url: String::new(),
            log_level: "info".into(),
            store: StoreConfig::default(),
            auth: Tokens::default(),
            limits: Limits::default(),
            uploads: Uploads::default(),
            immutable_files: false,
            events: Events::default(),
            webhooks: WebhookConfig::default(),
            mirror: None,
            connections: Connections::default(),
            signatures: Signatures::default(),
            device_report_ttl: crate::service::devices::DEFAULT_REPORT_TTL,
            rollout_tick: crate::service::rollouts::DEFAULT_ROLLOUT_TICK,
        }
    }
}

impl Config {
    /// Refuses settings that contradict each other (whichever way the configuration was built).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.mirror.is_some() && self.store.kind != StoreKind::Embedded {
            return Err(ConfigError::new(
                "--mirror-upstream",
                "an edge mirror needs the embedded store (--store embedded)",
            ));
        }
        Ok(())
    }
}

/// Where components are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// redb metadata and content-addressed files in the data directory.
    #[default]
    Embedded,
    /// MongoDB collections and GridFS.
    Mongodb,
}

#[derive(Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// The embedded store's directory (also where an edge mirror keeps partial files).
    pub data_dir: PathBuf,
    pub mongodb: MongoConfig,
    /// How often MongoDB's unreferenced files are collected; `None`: never (the `gc` command runs it by hand).
    pub gc_interval: Option<Duration>,
    /// Files younger than this are never collected, so uploads in flight are safe.
    pub gc_grace: Duration,
}

impl std::fmt::Debug for StoreConfig {
    // The MongoDB URI may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("data_dir", &self.data_dir)
            .field("mongodb_uri", &redact_uri(&self.mongodb.uri))
            .field("mongodb_database", &self.mongodb.database)
            .field("mongodb_grid_database", &self.mongodb.grid_database)
            .field("mongodb_bucket", &self.mongodb.bucket)
            .field("mongodb_timeout", &self.mongodb.timeout)
            .field("gc_interval", &self.gc_interval)
            .field("gc_grace", &self.gc_grace)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            data_dir: PathBuf::from("./data"),
            mongodb: MongoConfig {
                uri: "mongodb://localhost:27017".into(),
                database: "repository".into(),
                grid_database: "repository_grid".into(),
                bucket: "fs".into(),
                timeout: Duration::from_secs(5),
            },
            gc_interval: Some(Duration::from_secs(3600)),
            gc_grace: Duration::from_secs(86_400),
        }
    }
}

/// Uploads: their size, and the resumable (tus) sessions.
#[derive(Debug, Clone)]
pub struct Uploads {
    /// Largest accepted file, in bytes.
    pub max_size: u64,
    /// How long an unfinished resumable upload session lives.
    pub session_ttl: Duration,
    /// Most unfinished sessions per token.
    pub max_sessions: usize,
    /// Most bytes one token's unfinished sessions may announce together; `None`: `max_sessions` × `max_size`.
    pub max_session_bytes: Option<u64>,
}

impl Default for Uploads {
    fn default() -> Self {
        Self {
            max_size: 4 * 1024 * 1024 * 1024,
            session_ttl: DEFAULT_SESSION_TTL,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_session_bytes: None,
        }
    }
}

/// The change feed's housekeeping.
#[derive(Debug, Clone)]
pub struct Events {
    /// How long the feed keeps events, and how many at most.
    pub retention: EventRetention,
    /// How often the feed's and the webhook deliveries' retention is enforced.
    pub sweep_interval: Duration,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            retention: EventRetention::default(),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

/// An edge mirror: what it follows and how.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// The upstream's base URL, an http or https URL without a trailing `/`.
    pub upstream: String,
    /// Bearer token for a protected upstream.
    pub token: Option<Secret>,
    /// What the site's devices are; the mirror keeps what they can run.
    pub devices: Vec<MirrorDevice>,
    /// Components mirrored whatever the devices.
    pub include: Vec<ComponentKey>,
    /// Pipelines the site runs: their parts are mirrored, with the builds for their devices.
    pub pipelines: Vec<crate::service::mirror::MirrorPipeline>,
    /// Bandwidth cap for file transfers, in bytes per second.
    pub max_rate: Option<u64>,
    /// Most files transferred at once (at least 1).
    pub concurrency: usize,
    /// Ready before the first sync is complete.
    pub serve_stale: bool,
}

impl Mirror {
    /// A mirror of `upstream` with the flags' defaults, following nothing yet.
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.trim().trim_end_matches('/').to_string(),
            token: None,
            devices: Vec::new(),
            include: Vec::new(),
            pipelines: Vec::new(),
            max_rate: None,
            concurrency: 4,
            serve_stale: false,
        }
    }
}

/// How connections are accepted, kept and stopped.
#[derive(Debug, Clone)]
pub struct Connections {
    /// Connections served at once; `None`: what the file-descriptor limit allows, found when serving starts
    /// (after the limit is raised).
    pub max_connections: Option<usize>,
    /// Longest time to send a request's headers, and the longest idle keep-alive.
    pub header_read_timeout: Duration,
    /// A response whose client takes no bytes for this long is ended.
    pub send_idle_timeout: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// Threads that serve connections, each with a single-threaded runtime (0: served on the shared runtime);
    /// `None`: one per core.
    pub connection_threads: Option<usize>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            connection_threads: None,
            max_connections: None,
            header_read_timeout: Duration::from_secs(20),
            send_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A value that must never be printed, not even by `{:?}`.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.trim().to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A refused setting: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    /// The flag that names the setting (`--mirror-upstream`).
    pub setting: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

/// A device description file (JSON of the shape of GraphQL's `DeviceInput`, see [`crate::domain::parse_device`]).
pub fn load_device(path: &Path) -> Result<MirrorDevice, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the device description {}: {e}", path.display()))?;
    let input: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("the device description {} is not JSON: {e}", path.display()))?;
    let device = crate::domain::parse_device(&input).map_err(|e| {
        format!(
            "the device description {} is not a DeviceInput: {e}",
            path.display()
        )
    })?;
    Ok(MirrorDevice { input, device })
}

/// A pipeline file (JSON as `POST /pipelines/resolve` takes it, see [`crate::domain::parse_pipeline_file`]).
pub fn load_pipeline(path: &Path) -> Result<crate::service::mirror::MirrorPipeline, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the pipeline file {}: {e}", path.display()))?;
    let input: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("the pipeline file {} is not JSON: {e}", path.display()))?;
    let (pipeline, device) = crate::domain::parse_pipeline_file(&input)
        .map_err(|e| format!("the pipeline file {}: {e}", path.display()))?;
    pipeline
        .parts()
        .map_err(|e| format!("the pipeline file {}: {e}", path.display()))?;
    Ok(crate::service::mirror::MirrorPipeline { pipeline, device })
}

/// Connection string options whose values are never secret, so logs keep them; every other option's value is
/// replaced (passwords of TLS keys, `authMechanismProperties` with AWS session tokens, options added later).
const PUBLIC_URI_OPTIONS: [&str; 30] = [
    "appname",
    "authmechanism",
    "authsource",
    "compressors",
    "connecttimeoutms",
    "directconnection",
    "heartbeatfrequencyms",
    "journal",
    "loadbalanced",
    "localthresholdms",
    "maxconnecting",
    "maxidletimems",
    "maxpoolsize",
    "maxstalenessseconds",
    "minpoolsize",
    "readconcernlevel",
    "readpreference",
    "readpreferencetags",
    "replicaset",
    "retryreads",
    "retrywrites",
    "serverselectiontimeoutms",
    "sockettimeoutms",
    "srvmaxhosts",
    "srvservicename",
    "ssl",
    "tls",
    "w",
    "waitqueuetimeoutms",
    "wtimeoutms",
];

/// The URI for logs: user information (`scheme://user:password@hosts/...`) and the value of every query option
/// not known to be public become `***`.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "***".to_string();
    };
    // A password with an unescaped `?` must not pass for the query: the user information ends at the last `@`
    // before the path (erring towards redacting too much).
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, rest) = match rest[..authority_end].rfind('@') {
        Some(at) => ("***@", &rest[at + 1..]),
        None => ("", rest),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut redacted = format!("{scheme}://{userinfo}{rest}");
    if let Some(query) = query {
        let options: Vec<String> = query
            .split(['&', ';'])
            .map(|option| match option.split_once('=') {
                Some((name, _))
                    if PUBLIC_URI_OPTIONS.contains(&name.to_ascii_lowercase().as_str()) =>
                {
                    option.to_string()
                }
                Some((name, _)) => format!("{name}=***"),
                None => option.to_string(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&options.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::{Config, Mirror, StoreKind};

    #[test]
    fn a_mirror_on_mongodb_is_refused_however_the_config_was_built() {
        let mut config = Config {
            mirror: Some(Mirror::new("https://repo.example.org/")),
            ..Config::default()
        };
        assert!(config.check().is_ok());
        assert_eq!(
            config.mirror.as_ref().unwrap().upstream,
            "https://repo.example.org"
        );
        config.store.kind = StoreKind::Mongodb;
        let refused = config.check().unwrap_err();
        assert_eq!(refused.setting, "--mirror-upstream");
        assert!(refused.reason.contains("embedded store"), "{refused}");
    }

    #[test]
    fn debug_output_never_shows_the_mongodb_password_or_the_mirror_token() {
        let mut config = Config::default();
        config.store.mongodb.uri = "mongodb://admin:pa55@db:27017".into();
        let mut mirror = Mirror::new("https://repo.example.org");
        mirror.token = Some(super::Secret("t0ken".into()));
        config.mirror = Some(mirror);
        let shown = format!("{config:?}");
        assert!(shown.contains("mongodb://***@db:27017"), "{shown}");
        for secret in ["pa55", "t0ken"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_uri;

    #[test]
    fn credentials_never_reach_the_logs() {
        assert_eq!(
            redact_uri("mongodb://admin:s3cr@t@db-0,db-1:27017/repo?replicaSet=rs0"),
            "mongodb://***@db-0,db-1:27017/repo?replicaSet=rs0"
        );
        assert_eq!(redact_uri("mongodb://db:27017"), "mongodb://db:27017");
        assert_eq!(redact_uri("not a uri with secret@host"), "***");
    }

    #[test]
    fn secret_query_options_never_reach_the_logs() {
        let uri = "mongodb+srv://db.example/repo?tls=true&tlsCertificateKeyFilePassword=k3y\
                   &authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:t0ken\
                   &password=pw&replicaSet=rs0";
        let redacted = redact_uri(uri);
        assert_eq!(
            redacted,
            "mongodb+srv://db.example/repo?tls=true&tlsCertificateKeyFilePassword=***\
             &authMechanism=MONGODB-AWS&authMechanismProperties=***&password=***&replicaSet=rs0"
        );
        for secret in ["k3y", "t0ken", "pw"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        // A password in the user information and a query with an `@` in it.
        assert_eq!(
            redact_uri("mongodb://u:p@h/?authSource=admin&x=a@b"),
            "mongodb://***@h/?authSource=admin&x=***"
        );
        assert_eq!(redact_uri("mongodb://u:p?w@h/db"), "mongodb://***@h/db");
    }
}
