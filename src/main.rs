use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};

use component_repository::cli::{Cli, Command};
use component_repository::config::{Config, StoreConfig, redact_uri};
use component_repository::service::archive;
use component_repository::store::Store;
use component_repository::store::mongodb::{MongoConfig, MongoStore};
use component_repository::{api, server};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The one-shot commands need the store's settings only (and the log level): a setting only `serve` uses (a
    // mirror's device files, a tokens file) must not stop a `restore`.
    let store = StoreConfig::from(&cli.serve);
    let log_level = cli.serve.log_level.clone();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Schema => {
            print!("{}", api::graphql::sdl());
            Ok(())
        }
        Command::Serve => run(Config::try_from(cli.serve)?).await,
        Command::Gc => gc(&store, &log_level).await,
        Command::Dump { out, devices } => {
            let devices = devices
                .iter()
                .map(|path| {
                    component_repository::config::load_device(path)
                        .map(|d| d.device)
                        .map_err(anyhow::Error::msg)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = open_for_command(&store, &log_level).await?;
            let bar = ProgressView::new("dumping");
            let tally = if devices.is_empty() {
                archive::dump(store.as_ref(), &out, &bar).await
            } else {
                archive::dump_for_devices(store.as_ref(), &out, &bar, &devices).await
            }
            .with_context(|| format!("dumping to {}", out.display()))?;
            bar.finish(&format!("dumped to {}", out.display()), tally);
            Ok(())
        }
        Command::Restore {
            input,
            scratch_dir,
            if_empty,
        } => {
            let store = open_for_command(&store, &log_level).await?;
            if if_empty && !archive::is_empty(store.as_ref()).await? {
                tracing::info!("the store already holds components: nothing restored");
                return Ok(());
            }
            let bar = ProgressView::new("restoring");
            let tally = archive::restore(store.as_ref(), &input, &scratch_dir, &bar)
                .await
                .with_context(|| format!("restoring {}", input.display()))?;
            // Restored into an edge mirror's store: it follows its upstream from the archive's sequence.
            if let (Some(upstream), Some(sequence)) =
                (&cli.serve.mirror.mirror_upstream, tally.sequence)
            {
                component_repository::service::mirror::seed_state(
                    store.as_ref(),
                    upstream,
                    sequence,
                )
                .await
                .context("recording the archive's sequence for the mirror")?;
            }
            bar.finish(&format!("restored {}", input.display()), tally);
            Ok(())
        }
        Command::Import(from) => {
            let target = open_for_command(&store, &log_level).await?;
            let timeout = store.mongodb.timeout;
            let source = MongoConfig {
                uri: from.from_mongodb_uri.clone(),
                database: from.from_database.clone(),
                grid_database: from.from_grid_database.clone(),
                bucket: from.from_bucket.clone(),
                timeout,
            };
            let source = MongoStore::open_source(&source)
                .await
                .with_context(|| format!("connecting to {}", redact_uri(&from.from_mongodb_uri)))?;
            let bar = ProgressView::new("importing");
            let tally = archive::import(&source, target.as_ref(), &bar)
                .await
                .context("importing")?;
            bar.finish("imported", tally);
            Ok(())
        }
    }
}

/// A store for a one-shot command: logs only warnings, so that scripts stay quiet.
async fn open_for_command(
    store: &StoreConfig,
    log_level: &str,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    init_logging(match log_level {
        "info" => "warn",
        level => level,
    })?;
    Ok(server::open_store(store).await?.store())
}

/// Progress on a terminal (objects and bytes), nothing at all in scripts.
struct ProgressView {
    bar: ProgressBar,
    components: AtomicU64,
}

impl ProgressView {
    fn new(verb: &'static str) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} {msg} components, {binary_bytes} ({binary_bytes_per_sec})",
            )
            .expect("a valid template"),
        );
        bar.set_prefix(verb);
        bar.set_message("0");
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            components: AtomicU64::new(0),
        }
    }

    fn finish(&self, done: &str, tally: archive::Tally) {
        self.bar.finish_and_clear();
        if std::io::stderr().is_terminal() {
            eprintln!(
                "{done}: {} components, {} files, {}",
                tally.components,
                tally.files,
                bytesize::ByteSize::b(tally.bytes)
            );
        }
    }
}

impl archive::Progress for ProgressView {
    fn component(&self) {
        let n = self.components.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.set_message(n.to_string());
    }

    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .context("--log-level is not a valid log filter")?;
    // Colours only for people at a terminal; log collectors get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    Ok(())
}

/// One garbage collection, by hand (the server also runs it every `--gc-interval-secs`).
async fn gc(config: &StoreConfig, log_level: &str) -> anyhow::Result<()> {
    init_logging(log_level)?;
    let store = server::open_store(config).await?.store();
    let report = store
        .blobs()
        .collect_garbage(config.gc_grace)
        .await
        .context("collecting garbage")?;
    println!(
        "removed {} unreferenced files and {} stray chunks",
        report.files, report.stray_chunks
    );
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config.log_level)?;
    let descriptors = server::raise_fd_limit();
    // After the limit is raised: the default connection limit follows it.
    let options = server::ServeOptions::new(&config.connections);
    let mirror = config.mirror.as_ref();
    // Secrets stay out of the log: the MongoDB URI is shown without its credentials.
    tracing::info!(
        bind = %config.bind,
        store = ?config.store.kind,
        mongodb_uri = %redact_uri(&config.store.mongodb.uri),
        mongodb_database = %config.store.mongodb.database,
        data_dir = %config.store.data_dir.display(),
        auth = %config.auth.summary(),
        max_upload_size = %bytesize::ByteSize::b(config.uploads.max_size),
        upload_session_ttl_secs = config.uploads.session_ttl.as_secs(),
        public_url = %config.public_url,
        shutdown_grace_secs = config.connections.shutdown_grace.as_secs(),
        max_connections = options.connections.max_connections,
        mirror_upstream = mirror.map_or("", |m| m.upstream.as_str()),
        mirror_devices = mirror.map_or(0, |m| m.devices.len()),
        mirror_include = mirror.map(|m| m.include.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default(),
        mirror_token = mirror.is_some_and(|m| m.token.is_some()),
        mirror_max_rate = %mirror.and_then(|m| m.max_rate).map(|r| bytesize::ByteSize::b(r).to_string()).unwrap_or_default(),
        mirror_concurrency = mirror.map_or(0, |m| m.concurrency),
        descriptors,
        version = env!("CARGO_PKG_VERSION"),
        "starting component-repository"
    );
    let backend = server::open_store(&config.store).await?;
    tracing::info!(backend = backend.store().backend(), "store ready");
    let app = server::app(backend, &config)?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    tracing::info!(address = %listener.local_addr()?, "listening; GraphQL at /graphql");
    server::serve(listener, app, server::shutdown_signal(), options).await
}
