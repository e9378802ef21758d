use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use component_repository::cli::{Cli, Command, ServeArgs};
use component_repository::{api, server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Schema => {
            print!("{}", api::graphql::sdl());
            Ok(())
        }
        Command::Serve => run(cli.serve).await,
        Command::Gc => gc(cli.serve).await,
    }
}

fn init_logging(args: &ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .context("--log-level is not a valid log filter")?;
    // Colours only for people at a terminal; log collectors get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    Ok(())
}

/// One garbage collection, by hand (the server also runs it every `--gc-interval-secs`).
async fn gc(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let store = server::open_store(&args).await?;
    let report = store
        .collect_garbage(Duration::from_secs(args.mongodb.gc_grace_secs))
        .await
        .context("collecting garbage")?;
    println!(
        "removed {} unreferenced files and {} stray chunks",
        report.files, report.stray_chunks
    );
    Ok(())
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    // Secrets stay out of the log: the MongoDB URI is shown without its credentials.
    tracing::info!(
        bind = %args.bind,
        store = ?args.store,
        mongodb_uri = %args.mongodb.redacted_uri(),
        mongodb_database = %args.mongodb.mongodb_database,
        data_dir = %args.data_dir.display(),
        max_upload_size = %args.max_upload_size,
        public_url = %args.public_url,
        shutdown_grace_secs = args.shutdown_grace_secs,
        version = env!("CARGO_PKG_VERSION"),
        "starting component-repository"
    );
    let store = server::open_store(&args).await?;
    tracing::info!(backend = store.backend(), "store ready");
    let _gc = server::spawn_periodic_gc(store.clone(), &args);
    let app = server::app(store, &args);
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    tracing::info!(address = %listener.local_addr()?, "listening; GraphQL at /graphql");
    server::serve(
        listener,
        app,
        server::shutdown_signal(),
        Duration::from_secs(args.shutdown_grace_secs),
    )
    .await
}
