//! Command line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Parser, Subcommand};

mod mirror;
mod to_config;
pub use crate::config::{Secret, redact_uri};
pub use mirror::MirrorArgs;

#[derive(Debug, Parser)]
#[command(name = "component-repository", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the GraphQL schema (SDL) and exit.
    Schema,
    /// Remove stored files that no component refers to (older than `--gc-grace-secs`), print what went, and exit.
    Gc,
    /// Write every component and file of the store to one archive (tar: metadata, files, sha256 manifest).
    Dump {
        /// The archive to write; it appears only once complete.
        #[arg(long)]
        out: PathBuf,
        /// Only what this device can run (a JSON `DeviceInput`), with the models it references, for an
        /// air-gapped edge mirror; repeatable. The archive records the feed's sequence.
        #[arg(long = "device", value_name = "FILE")]
        devices: Vec<PathBuf>,
    },
    /// Add every component of an archive to the store. The archive is verified in full before anything is
    /// written, and nothing is written if a component of it already exists.
    Restore {
        /// The archive to read.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where the archive is unpacked and verified first (needs room for its files).
        #[arg(long, env = "REPOSITORY_SCRATCH_DIR", default_value_os_t = std::env::temp_dir())]
        scratch_dir: PathBuf,
        /// Restore only into an empty store, and succeed without doing anything otherwise: how the Docker image
        /// and the Helm chart seed a new deployment, every time it starts, from an archive.
        #[arg(long)]
        if_empty: bool,
    },
    /// Copy every component of a database written by the original service (MongoDB + GridFS) into the store.
    Import(ImportArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Connection string of the original service's MongoDB. Never logged.
    #[arg(long, env = "REPOSITORY_IMPORT_MONGODB_URI", hide_env_values = true)]
    pub from_mongodb_uri: String,
    /// Its metadata database.
    #[arg(long, default_value = "repository")]
    pub from_database: String,
    /// Its GridFS database.
    #[arg(long, default_value = "repository_grid")]
    pub from_grid_database: String,
    /// Its GridFS bucket.
    #[arg(long, default_value = "fs")]
    pub from_bucket: String,
}

/// Where components are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// redb metadata and content-addressed files in `--data-dir`: no server needed.
    Embedded,
    /// MongoDB collections and GridFS, for deployments that outgrow one machine.
    Mongodb,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(
        long,
        env = "REPOSITORY_BIND",
        default_value = "0.0.0.0:8000",
        global = true
    )]
    pub bind: SocketAddr,

    /// Storage backend.
    #[arg(
        long,
        env = "REPOSITORY_STORE",
        value_enum,
        default_value_t = StoreKind::Embedded,
        global = true
    )]
    pub store: StoreKind,

    #[command(flatten)]
    pub mongodb: MongoArgs,

    #[command(flatten)]
    pub mirror: MirrorArgs,

    /// Directory of the embedded store (metadata database and files).
    #[arg(
        long,
        env = "REPOSITORY_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Largest accepted upload, e.g. `512MiB`, `4GiB`.
    #[arg(
        long,
        env = "REPOSITORY_MAX_UPLOAD_SIZE",
        default_value = "4GiB",
        global = true
    )]
    pub max_upload_size: ByteSize,

    /// Make files immutable: once uploaded, a file cannot be replaced and a component with a file cannot be
    /// deleted (409 `IMMUTABLE`). Off by default, as in the original service.
    #[arg(long, env = "REPOSITORY_IMMUTABLE_FILES", global = true)]
    pub immutable_files: bool,

    /// What to do with signatures of files: `off` (kept and shown), `audit` (also checked against
    /// `--trust-policy`; unverified downloads are counted) or `enforce` (files without a verified signature are
    /// not served: 403 `UNSIGNED`; aliases do not move to such versions). Default: `audit` with a policy, else `off`.
    #[arg(long, env = "REPOSITORY_SIGNATURES", value_enum, global = true)]
    pub signatures: Option<SignaturesArg>,

    /// The trust policy (TOML): which public keys and certificate authorities vouch for which components; see the
    /// README, "Signing and verification". Re-read on SIGHUP.
    #[arg(long, env = "REPOSITORY_TRUST_POLICY", global = true)]
    pub trust_policy: Option<PathBuf>,

    /// Bearer tokens that may read and write, comma-separated. With any token configured, writes need a write
    /// token. Never logged.
    #[arg(
        long,
        env = "REPOSITORY_WRITE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub write_tokens: Vec<Secret>,

    /// Bearer tokens that may only read, comma-separated. Never logged.
    #[arg(
        long,
        env = "REPOSITORY_READ_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub read_tokens: Vec<Secret>,

    /// Bearer tokens of devices, comma-separated: they may report (`POST /devices/{id}/report`) and read, nothing
    /// else. Never logged.
    #[arg(
        long,
        env = "REPOSITORY_DEVICE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub device_tokens: Vec<Secret>,

    /// How long a device report keeps its device live (s, m, h or d): older reports are left out of `devices`
    /// and of in-use counts, and swept.
    #[arg(
        long,
        env = "REPOSITORY_DEVICE_REPORT_TTL",
        default_value = "15m",
        value_parser = parse_age,
        global = true
    )]
    pub device_report_ttl: std::time::Duration,

    /// How often rollouts step: each open rollout's classes whose step is over are judged then (s, m, h or d).
    #[arg(
        long,
        env = "REPOSITORY_ROLLOUT_TICK",
        default_value = "1s",
        value_parser = parse_age,
        global = true
    )]
    pub rollout_tick: std::time::Duration,

    /// A file of tokens, one per line: `read <token>`, `write <token>` or `device <token>` (`#` starts a comment).
    #[arg(long, env = "REPOSITORY_TOKENS_FILE", global = true)]
    pub tokens_file: Option<PathBuf>,

    /// With tokens configured, let anyone read (queries, downloads); writes still need a write token.
    #[arg(long, env = "REPOSITORY_PUBLIC_READS", global = true)]
    pub public_reads: bool,

    /// Deepest selection a GraphQL operation may have.
    #[arg(
        long,
        env = "REPOSITORY_GRAPHQL_MAX_DEPTH",
        default_value_t = 16,
        global = true
    )]
    pub graphql_max_depth: usize,

    /// Largest complexity (number of fields selected) a GraphQL request may have, all operations of a batch
    /// together.
    #[arg(
        long,
        env = "REPOSITORY_GRAPHQL_MAX_COMPLEXITY",
        default_value_t = 5000,
        global = true
    )]
    pub graphql_max_complexity: usize,

    /// Most aliased fields in one GraphQL request (all operations of a batch together).
    #[arg(
        long,
        env = "REPOSITORY_GRAPHQL_MAX_ALIASES",
        default_value_t = 30,
        global = true
    )]
    pub graphql_max_aliases: usize,

    /// Most operations in one GraphQL batch (a JSON array of requests).
    #[arg(
        long,
        env = "REPOSITORY_GRAPHQL_MAX_BATCH",
        default_value_t = 100,
        global = true
    )]
    pub graphql_max_batch: usize,

    /// Most files in one GraphQL multipart request.
    #[arg(
        long,
        env = "REPOSITORY_GRAPHQL_MAX_FILES",
        default_value_t = 10,
        global = true
    )]
    pub graphql_max_files: usize,

    /// Seconds a GraphQL WebSocket may wait before its `connection_init`; then it is closed (4408).
    #[arg(
        long,
        env = "REPOSITORY_WS_INIT_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub ws_init_timeout_secs: u64,

    /// Most operations (subscriptions, mostly) running at once on one GraphQL WebSocket.
    #[arg(
        long,
        env = "REPOSITORY_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value_t = 100,
        global = true
    )]
    pub max_subscriptions_per_connection: usize,

    /// Most GraphQL WebSocket operations running at once for one token, over all its connections (clients
    /// without a token count as one token).
    #[arg(
        long,
        env = "REPOSITORY_MAX_SUBSCRIPTIONS_PER_TOKEN",
        default_value_t = 20_000,
        global = true
    )]
    pub max_subscriptions_per_token: usize,

    /// Whether the GraphQL schema can be introspected (the playground and code generators need it).
    #[arg(long, env = "REPOSITORY_GRAPHQL_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub graphql_introspection: bool,

    /// Refuse GraphQL GET and multipart requests that lack a preflight-forcing header
    /// (`apollo-require-preflight`), so that other websites cannot send them through a visitor's browser.
    #[arg(long, env = "REPOSITORY_CSRF_PREVENTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub csrf_prevention: bool,

    /// Longest time to answer a request other than an upload, in seconds (downloads then stream unhurried).
    #[arg(
        long,
        env = "REPOSITORY_REQUEST_TIMEOUT_SECS",
        default_value_t = 60,
        global = true
    )]
    pub request_timeout_secs: u64,

    /// Longest pause in the middle of a request body, in seconds.
    #[arg(
        long,
        env = "REPOSITORY_BODY_IDLE_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub body_idle_timeout_secs: u64,

    /// Origins allowed to call the API from a browser (CORS), comma-separated, or `*`; empty for none.
    #[arg(
        long,
        env = "REPOSITORY_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Log filter: a level (`info`, `debug`) or a tracing filter (`component_repository=debug,tower_http=info`).
    /// `RUST_LOG`, when set, takes precedence.
    #[arg(
        long,
        env = "REPOSITORY_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: String,

    /// Public base URL of this server (e.g. `https://repo.example.org`), used to make `downloadUrl` absolute;
    /// when empty, download URLs are paths relative to the server.
    #[arg(long, env = "REPOSITORY_PUBLIC_URL", default_value = "", global = true)]
    pub public_url: String,

    /// How long the change feed keeps events and how many at most, as `AGE,COUNT` (age in s, m, h or d): older
    /// or further events are removed, and a client asking for them gets `EVENTS_EXPIRED`.
    #[arg(
        long,
        env = "REPOSITORY_EVENTS_RETENTION",
        default_value = "30d,1000000",
        value_parser = parse_retention,
        global = true
    )]
    pub events_retention: crate::store::EventRetention,

    /// How long an unfinished resumable (tus) upload session lives, with a unit (s, m, h or d), from 1s to 30d:
    /// afterwards it and its bytes are removed.
    #[arg(
        long,
        env = "REPOSITORY_UPLOAD_SESSION_TTL",
        default_value = "24h",
        value_parser = parse_session_ttl,
        global = true
    )]
    pub upload_session_ttl: std::time::Duration,

    /// Most unfinished resumable (tus) upload sessions one token may hold (all callers share one without
    /// tokens); the next creation is answered 429 until one finishes, is cancelled or expires.
    #[arg(
        long,
        env = "REPOSITORY_MAX_UPLOAD_SESSIONS",
        default_value_t = crate::service::uploads::DEFAULT_MAX_SESSIONS as u64,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub max_upload_sessions: u64,

    /// Most bytes one token's unfinished resumable upload sessions may announce together (their `Upload-Length`s),
    /// e.g. `20GiB`; without it, `--max-upload-sessions` times `--max-upload-size`.
    #[arg(long, env = "REPOSITORY_MAX_UPLOAD_SESSION_BYTES", global = true)]
    pub max_upload_session_bytes: Option<ByteSize>,

    /// How often the retention of the change feed and of webhook deliveries is enforced, in seconds.
    #[arg(
        long,
        env = "REPOSITORY_EVENTS_RETENTION_SWEEP_SECS",
        default_value_t = 60,
        global = true
    )]
    pub events_retention_sweep_secs: u64,

    /// Let webhooks reach loopback, private and link-local addresses (refused by default: a webhook must not be
    /// a way into the server's own network).
    #[arg(long, env = "REPOSITORY_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", global = true)]
    pub webhooks_allow_private_networks: bool,

    /// Most webhooks at once: creating one more is refused with `LIMIT_EXCEEDED`. Each webhook has a worker
    /// that looks at every event.
    #[arg(
        long,
        env = "REPOSITORY_MAX_WEBHOOKS",
        default_value_t = 100,
        global = true
    )]
    pub max_webhooks: usize,

    /// How long webhook deliveries (delivered or given up on) are kept and how many per webhook at most, as
    /// `AGE,COUNT` (age in s, m, h or d); removed at each `--events-retention-sweep-secs`.
    #[arg(
        long,
        env = "REPOSITORY_WEBHOOK_DELIVERY_RETENTION",
        default_value = "30d,1000",
        value_parser = parse_retention,
        global = true
    )]
    pub webhook_delivery_retention: crate::store::EventRetention,

    /// Longest a webhook's progress past events it filters out stays unsaved (s, m, h or d); after a restart it
    /// looks at those events again. Deliveries always save it.
    #[arg(
        long,
        env = "REPOSITORY_WEBHOOK_CURSOR_SAVE_INTERVAL",
        default_value = "5s",
        value_parser = parse_age,
        global = true
    )]
    pub webhook_cursor_save_interval: std::time::Duration,

    /// How long in-flight requests may run after SIGTERM or Ctrl-C before the server stops anyway, in seconds.
    #[arg(
        long,
        env = "REPOSITORY_SHUTDOWN_GRACE_SECS",
        default_value_t = 30,
        global = true
    )]
    pub shutdown_grace_secs: u64,

    /// Connections served at once; more are answered `503` (`/healthz` still answers) and closed. Default: what
    /// the file-descriptor limit allows (half of it, less a reserve), at most 10000.
    #[arg(long, env = "REPOSITORY_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,

    /// Longest time a client may take to send a request's headers, and the longest a kept-alive connection may
    /// idle between requests, in seconds.
    #[arg(
        long,
        env = "REPOSITORY_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 20,
        global = true
    )]
    pub header_read_timeout_secs: u64,

    /// A response (a download, say) whose client takes no bytes for this long is ended, in seconds; the client
    /// resumes with `Range`.
    #[arg(
        long,
        env = "REPOSITORY_SEND_IDLE_TIMEOUT_SECS",
        default_value_t = 60,
        global = true
    )]
    pub send_idle_timeout_secs: u64,

    /// Threads that serve connections, each keeping its connections for their whole life, as nginx's workers do
    /// (downloads go faster than on a shared pool of workers). 0: connections share the runtime's workers with
    /// everything else. Default: one per core.
    #[arg(long, env = "REPOSITORY_CONNECTION_THREADS", global = true)]
    pub connection_threads: Option<usize>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MongoArgs {
    /// MongoDB connection string (`--store mongodb`). It may hold credentials: it is never logged.
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://localhost:27017",
        global = true,
        hide_env_values = true
    )]
    pub mongodb_uri: String,

    /// Database of the metadata collections.
    #[arg(
        long,
        env = "REPOSITORY_MONGODB_DATABASE",
        default_value = "repository",
        global = true
    )]
    pub mongodb_database: String,

    /// Database of the GridFS bucket that holds the files.
    #[arg(
        long,
        env = "REPOSITORY_MONGODB_GRID_DATABASE",
        default_value = "repository_grid",
        global = true
    )]
    pub mongodb_grid_database: String,

    /// GridFS bucket name.
    #[arg(
        long,
        env = "REPOSITORY_MONGODB_BUCKET",
        default_value = "fs",
        global = true
    )]
    pub mongodb_bucket: String,

    /// Longest wait for a usable MongoDB server before a request fails with 503 / UNAVAILABLE, in seconds.
    #[arg(
        long,
        env = "REPOSITORY_MONGODB_TIMEOUT_SECS",
        default_value_t = 5,
        global = true
    )]
    pub mongodb_timeout_secs: u64,

    /// How often the server collects unreferenced files, in seconds (0: never; `gc` runs it by hand).
    #[arg(
        long,
        env = "REPOSITORY_GC_INTERVAL_SECS",
        default_value_t = 3600,
        global = true
    )]
    pub gc_interval_secs: u64,

    /// Files younger than this are never collected, so uploads in flight are safe, in seconds.
    #[arg(
        long,
        env = "REPOSITORY_GC_GRACE_SECS",
        default_value_t = 86_400,
        global = true
    )]
    pub gc_grace_secs: u64,
}

/// `AGE,COUNT` of `--events-retention`: `30d,1000000`, `12h,5000`, `90s,10`.
fn parse_retention(text: &str) -> Result<crate::store::EventRetention, String> {
    let (age, count) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?}: expected AGE,COUNT such as 30d,1000000"))?;
    let max_count = count
        .trim()
        .parse()
        .map_err(|_| format!("{count:?}: expected a number of events"))?;
    Ok(crate::store::EventRetention {
        max_age: parse_age(age)?,
        max_count,
    })
}

/// A duration with a unit: `90s`, `30m`, `24h`, `30d`.
fn parse_age(age: &str) -> Result<std::time::Duration, String> {
    let age = age.trim();
    let split = age
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{age:?}: the age needs a unit (s, m, h or d)"))?;
    let (number, unit) = age.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{age:?}: expected a number of s, m, h or d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{age:?}: the unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    ))
}

/// A session time to live within [`MIN_SESSION_TTL`](crate::service::uploads::MIN_SESSION_TTL) and
/// [`MAX_SESSION_TTL`](crate::service::uploads::MAX_SESSION_TTL): `0s` would end every session as it starts.
fn parse_session_ttl(text: &str) -> Result<std::time::Duration, String> {
    use crate::service::uploads::{MAX_SESSION_TTL, MIN_SESSION_TTL};
    let ttl = parse_age(text)?;
    if ttl < MIN_SESSION_TTL || ttl > MAX_SESSION_TTL {
        return Err(format!(
            "{text:?}: an upload session must live at least {}s and at most {}d",
            MIN_SESSION_TTL.as_secs(),
            MAX_SESSION_TTL.as_secs() / 86400
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod retention_tests {
    use super::parse_retention;

    #[test]
    fn session_ttls_are_bounded() {
        use super::parse_session_ttl;
        assert_eq!(parse_session_ttl("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_session_ttl("30d").unwrap().as_secs(), 30 * 86400);
        for refused in ["0s", "0d", "31d", "100000h", "5"] {
            assert!(parse_session_ttl(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn retention_reads_age_and_count() {
        let r = parse_retention("30d,1000000").unwrap();
        assert_eq!(r.max_age.as_secs(), 30 * 86400);
        assert_eq!(r.max_count, 1_000_000);
        assert_eq!(parse_retention("90s, 10").unwrap().max_age.as_secs(), 90);
        assert!(parse_retention("30d").is_err());
        assert!(parse_retention("30,5").is_err());
        assert!(parse_retention("3w,5").is_err());
    }
}

/// `--signatures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignaturesArg {
    Off,
    Audit,
    Enforce,
}
