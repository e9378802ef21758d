//! The flags of an edge mirror (`serve --mirror-upstream URL --mirror-device FILE ...`).

use std::path::PathBuf;

use bytesize::ByteSize;

use super::Secret;

#[derive(Debug, Clone, clap::Args)]
pub struct MirrorArgs {
    /// Run as an edge mirror of this repository (its base URL, e.g. `https://repo.example.org`): keep a verified
    /// copy of what the `--mirror-device`s can run, follow its change feed, refuse writes (403 `READ_ONLY_MIRROR`).
    #[arg(long, env = "REPOSITORY_MIRROR_UPSTREAM", global = true)]
    pub mirror_upstream: Option<String>,

    /// A file holding a JSON device description (the shape of GraphQL's `DeviceInput`), one per kind of device at
    /// the site; repeatable (comma-separated in the environment).
    #[arg(
        long = "mirror-device",
        env = "REPOSITORY_MIRROR_DEVICES",
        value_delimiter = ',',
        global = true
    )]
    pub mirror_devices: Vec<PathBuf>,

    /// An inference pipeline the site runs: a JSON file as `POST /pipelines/resolve` takes it (the inference
    /// server's setup, model, preprocessing and postprocessing files and the `device`). The mirror holds its parts
    /// (every version of a model it names by alias) with the builds for that device's platform; repeatable
    /// (comma-separated in the environment).
    #[arg(
        long = "mirror-pipeline",
        env = "REPOSITORY_MIRROR_PIPELINES",
        value_delimiter = ',',
        global = true
    )]
    pub mirror_pipelines: Vec<PathBuf>,

    /// Bearer token for a protected upstream (a read token is enough). Never logged.
    #[arg(
        long,
        env = "REPOSITORY_MIRROR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub mirror_token: Option<Secret>,

    /// One more component to mirror whatever the devices: `model:NAME/VERSION`, `service:ID`,
    /// `transformation:ID` or `inferencer:ID`; repeatable (comma-separated in the environment).
    #[arg(
        long = "mirror-include",
        env = "REPOSITORY_MIRROR_INCLUDE",
        value_delimiter = ',',
        global = true
    )]
    pub mirror_include: Vec<String>,

    /// Bandwidth cap for file transfers from the upstream, in bytes per second (`500KiB`, `10MB`); none by default.
    #[arg(long, env = "REPOSITORY_MIRROR_MAX_RATE", global = true)]
    pub mirror_max_rate: Option<ByteSize>,

    /// Most files transferred from the upstream at once.
    #[arg(
        long,
        env = "REPOSITORY_MIRROR_CONCURRENCY",
        default_value_t = 4,
        global = true
    )]
    pub mirror_concurrency: usize,

    /// Answer `/readyz` as ready before the first sync is complete (serving what the mirror already holds).
    #[arg(long, env = "REPOSITORY_MIRROR_SERVE_STALE", global = true)]
    pub mirror_serve_stale: bool,
}
