use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};

use component_repository::cli::{Cli, Command, ServeArgs, redact_uri};
use component_repository::service::archive;
use component_repository::store::Store;
use component_repository::store::mongodb::{MongoConfig, MongoStore};
use component_repository::{api, server};
use indicatif::{ProgressBar, ProgressStyle};
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
        Command::Dump { out, devices } => {
            let devices = devices
                .iter()
                .map(|path| server::load_device(path).map(|(_, device)| device))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = open_for_command(&cli.serve).await?;
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
            let store = open_for_command(&cli.serve).await?;
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
            let target = open_for_command(&cli.serve).await?;
            let config = MongoConfig {
                uri: from.from_mongodb_uri.clone(),
                database: from.from_database.clone(),
                grid_database: from.from_grid_database.clone(),
                bucket: from.from_bucket.clone(),
                timeout: Duration::from_secs(cli.serve.mongodb.mongodb_timeout_secs.max(1)),
            };
            let source = MongoStore::open_source(&config)
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
async fn open_for_command(args: &ServeArgs) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let mut args = args.clone();
    if args.log_level == "info" {
        args.log_level = "warn".into();
    }
    init_logging(&args)?;
    server::open_store(&args).await
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
        .blobs()
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
    let descriptors = server::raise_fd_limit();
    let options = server::ServeOptions::from_args(&args);
    // Secrets stay out of the log: the MongoDB URI is shown without its credentials.
    tracing::info!(
        bind = %args.bind,
        store = ?args.store,
        mongodb_uri = %args.mongodb.redacted_uri(),
        mongodb_database = %args.mongodb.mongodb_database,
        data_dir = %args.data_dir.display(),
        auth = %server::tokens(&args)?.summary(),
        max_upload_size = %args.max_upload_size,
        upload_session_ttl_secs = args.upload_session_ttl.as_secs(),
        public_url = %args.public_url,
        shutdown_grace_secs = args.shutdown_grace_secs,
        max_connections = options.connections.max_connections,
        mirror_upstream = args.mirror.mirror_upstream.as_deref().unwrap_or(""),
        mirror_devices = args.mirror.mirror_devices.len(),
        mirror_include = args.mirror.mirror_include.join(","),
        mirror_token = args.mirror.mirror_token.is_some(),
        mirror_max_rate = %args.mirror.mirror_max_rate.map(|r| r.to_string()).unwrap_or_default(),
        mirror_concurrency = args.mirror.mirror_concurrency,
        descriptors,
        version = env!("CARGO_PKG_VERSION"),
        "starting component-repository"
    );
    let store = server::open_store(&args).await?;
    tracing::info!(backend = store.backend(), "store ready");
    let _gc = server::spawn_periodic_gc(store.clone(), &args);
    let app = server::app(store, &args)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    tracing::info!(address = %listener.local_addr()?, "listening; GraphQL at /graphql");
    server::serve(listener, app, server::shutdown_signal(), options).await
}
