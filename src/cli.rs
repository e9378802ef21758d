//! Command line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Parser, Subcommand};

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

    /// How long in-flight requests may run after SIGTERM or Ctrl-C before the server stops anyway, in seconds.
    #[arg(
        long,
        env = "REPOSITORY_SHUTDOWN_GRACE_SECS",
        default_value_t = 30,
        global = true
    )]
    pub shutdown_grace_secs: u64,
}
