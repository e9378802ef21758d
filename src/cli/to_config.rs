//! `serve`'s flags to the server's [`Config`]: every check and clamp of the command line happens here, once.

use crate::service::signing::SignatureMode;
use std::time::Duration;

use crate::api::auth::Tokens;
use crate::api::limits::Limits;
use crate::config::{
    self, Config, ConfigError, Connections, Events, Mirror, StoreConfig, Uploads, load_device,
};
use crate::service::webhooks::WebhookConfig;
use crate::store::mongodb::MongoConfig;

use super::{MirrorArgs, ServeArgs, StoreKind};

/// A number of seconds, at least one: a zero timeout would end everything at once.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n.max(1))
}

impl From<StoreKind> for config::StoreKind {
    fn from(kind: StoreKind) -> Self {
        match kind {
            StoreKind::Embedded => config::StoreKind::Embedded,
            StoreKind::Mongodb => config::StoreKind::Mongodb,
        }
    }
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let secrets = |list: &[super::Secret]| list.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
        let auth = Tokens::new(
            &secrets(&args.read_tokens),
            &secrets(&args.write_tokens),
            args.tokens_file.as_deref(),
            args.public_reads,
        )
        .map_err(|e| ConfigError::new("--tokens-file", format!("{e:#}")))?
        .with_device_tokens(&secrets(&args.device_tokens));
        let config = Config {
            bind: args.bind,
            public_url: args.public_url.clone(),
            log_level: args.log_level.clone(),
            store: StoreConfig::from(&args),
            auth,
            limits: Limits {
                max_depth: args.graphql_max_depth,
                max_complexity: args.graphql_max_complexity,
                max_aliases: args.graphql_max_aliases,
                max_batch: args.graphql_max_batch,
                max_files: args.graphql_max_files,
                introspection: args.graphql_introspection,
                csrf_prevention: args.csrf_prevention,
                request_timeout: secs(args.request_timeout_secs),
                body_idle_timeout: secs(args.body_idle_timeout_secs),
                cors_origins: args
                    .cors_allowed_origins
                    .iter()
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
                ws_init_timeout: secs(args.ws_init_timeout_secs),
                // A WebSocket that runs nothing is an idle keep-alive connection by another name.
                ws_idle_timeout: secs(args.header_read_timeout_secs),
                max_subscriptions_per_connection: args.max_subscriptions_per_connection.max(1),
                max_subscriptions_per_token: args.max_subscriptions_per_token.max(1),
            },
            uploads: Uploads {
                max_size: args.max_upload_size.as_u64(),
                session_ttl: args.upload_session_ttl,
                max_sessions: usize::try_from(args.max_upload_sessions).unwrap_or(usize::MAX),
                max_session_bytes: args.max_upload_session_bytes.map(|b| b.as_u64()),
            },
            immutable_files: args.immutable_files,
            events: Events {
                retention: args.events_retention,
                sweep_interval: secs(args.events_retention_sweep_secs),
            },
            webhooks: WebhookConfig {
                allow_private_networks: args.webhooks_allow_private_networks,
                max_webhooks: args.max_webhooks,
                cursor_save_interval: args.webhook_cursor_save_interval,
                delivery_max_age: args.webhook_delivery_retention.max_age,
                deliveries_kept: usize::try_from(args.webhook_delivery_retention.max_count)
                    .unwrap_or(usize::MAX),
            },
            mirror: mirror(&args.mirror)?,
            signatures: crate::config::Signatures {
                mode: args.signatures.map(|mode| match mode {
                    crate::cli::SignaturesArg::Off => SignatureMode::Off,
                    crate::cli::SignaturesArg::Audit => SignatureMode::Audit,
                    crate::cli::SignaturesArg::Enforce => SignatureMode::Enforce,
                }),
                trust_policy: args.trust_policy.clone(),
            },
            connections: Connections {
                max_connections: args.max_connections.map(|n| n.max(1)),
                header_read_timeout: secs(args.header_read_timeout_secs),
                send_idle_timeout: secs(args.send_idle_timeout_secs),
                shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
                connection_threads: args.connection_threads,
            },
            device_report_ttl: args.device_report_ttl,
            rollout_tick: args.rollout_tick,
        };
        config.check()?;
        Ok(config)
    }
}

/// The store part alone, for the one-shot commands (`gc`, `dump`, `restore`, `import`): they never fail on a
/// setting only `serve` uses.
impl From<&ServeArgs> for StoreConfig {
    fn from(args: &ServeArgs) -> Self {
        let mongo = &args.mongodb;
        StoreConfig {
            kind: args.store.into(),
            data_dir: args.data_dir.clone(),
            mongodb: MongoConfig {
                uri: mongo.mongodb_uri.clone(),
                database: mongo.mongodb_database.clone(),
                grid_database: mongo.mongodb_grid_database.clone(),
                bucket: mongo.mongodb_bucket.clone(),
                timeout: secs(mongo.mongodb_timeout_secs),
            },
            gc_interval: Some(Duration::from_secs(mongo.gc_interval_secs)).filter(|i| !i.is_zero()),
            gc_grace: Duration::from_secs(mongo.gc_grace_secs),
        }
    }
}

/// The mirror the flags describe; `None` without `--mirror-upstream`.
fn mirror(flags: &MirrorArgs) -> Result<Option<Mirror>, ConfigError> {
    let Some(upstream) = flags.mirror_upstream.as_deref().map(str::trim) else {
        return Ok(None);
    };
    let url = reqwest::Url::parse(upstream).map_err(|e| {
        ConfigError::new(
            "--mirror-upstream",
            format!("{upstream:?} is not a URL: {e}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            "--mirror-upstream",
            format!("{upstream:?} must be an http or https URL"),
        ));
    }
    if flags.mirror_devices.is_empty()
        && flags.mirror_include.is_empty()
        && flags.mirror_pipelines.is_empty()
    {
        return Err(ConfigError::new(
            "--mirror-device",
            "a mirror needs at least one --mirror-device (or --mirror-include, or --mirror-pipeline)",
        ));
    }
    let pipelines = flags
        .mirror_pipelines
        .iter()
        .map(|path| {
            crate::config::load_pipeline(path).map_err(|e| ConfigError::new("--mirror-pipeline", e))
        })
        .collect::<Result<_, _>>()?;
    let devices = flags
        .mirror_devices
        .iter()
        .map(|path| load_device(path).map_err(|e| ConfigError::new("--mirror-device", e)))
        .collect::<Result<_, _>>()?;
    let include = flags
        .mirror_include
        .iter()
        .map(|text| {
            crate::service::mirror::parse_include(text)
                .map_err(|e| ConfigError::new("--mirror-include", e))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(Mirror {
        token: flags.mirror_token.clone(),
        devices,
        include,
        pipelines,
        max_rate: flags.mirror_max_rate.map(|r| r.as_u64()),
        concurrency: flags.mirror_concurrency.max(1),
        serve_stale: flags.mirror_serve_stale,
        ..Mirror::new(upstream)
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use crate::cli::Cli;
    use crate::config::{Config, ConfigError, StoreKind};

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let argv = ["component-repository", "serve"].iter().chain(flags);
        Config::try_from(Cli::try_parse_from(argv).unwrap().serve)
    }

    fn refusal(flags: &[&str]) -> ConfigError {
        config(flags).expect_err("refused")
    }

    #[test]
    fn connection_threads_default_to_one_per_core_and_zero_means_the_shared_runtime() {
        assert_eq!(config(&[]).unwrap().connections.connection_threads, None);
        let shared = config(&["--connection-threads=0"]).unwrap();
        assert_eq!(shared.connections.connection_threads, Some(0));
        let three = config(&["--connection-threads=3"]).unwrap();
        assert_eq!(three.connections.connection_threads, Some(3));
    }

    #[test]
    fn the_flags_defaults_are_the_configs_defaults() {
        // Where the environment names a setting, it is the user's, not a default.
        if std::env::vars()
            .any(|(name, _)| name.starts_with("REPOSITORY_") || name == "MONGODB_URI")
        {
            eprintln!(
                "SKIPPED the_flags_defaults_are_the_configs_defaults: REPOSITORY_* set in the environment"
            );
            return;
        }
        assert_eq!(
            format!("{:?}", config(&[]).unwrap()),
            format!("{:?}", Config::default())
        );
    }

    #[test]
    fn durations_and_counts_are_clamped_to_at_least_one() {
        let config = config(&[
            "--request-timeout-secs=0",
            "--body-idle-timeout-secs=0",
            "--ws-init-timeout-secs=0",
            "--header-read-timeout-secs=0",
            "--send-idle-timeout-secs=0",
            "--events-retention-sweep-secs=0",
            "--mongodb-timeout-secs=0",
            "--max-subscriptions-per-connection=0",
            "--max-subscriptions-per-token=0",
            "--max-connections=0",
        ])
        .unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(config.limits.request_timeout, second);
        assert_eq!(config.limits.body_idle_timeout, second);
        assert_eq!(config.limits.ws_init_timeout, second);
        assert_eq!(config.limits.ws_idle_timeout, second);
        assert_eq!(config.connections.header_read_timeout, second);
        assert_eq!(config.connections.send_idle_timeout, second);
        assert_eq!(config.events.sweep_interval, second);
        assert_eq!(config.store.mongodb.timeout, second);
        assert_eq!(config.limits.max_subscriptions_per_connection, 1);
        assert_eq!(config.limits.max_subscriptions_per_token, 1);
        assert_eq!(config.connections.max_connections, Some(1));
    }

    #[test]
    fn flags_that_mean_something_else_in_the_config_are_translated() {
        let config = config(&[
            "--gc-interval-secs=0",
            "--header-read-timeout-secs=7",
            "--cors-allowed-origins= https://a.example ,,https://b.example",
            "--write-tokens=w-one,w-two",
            "--read-tokens=r-one",
            "--webhook-delivery-retention=2h,5",
            "--max-upload-session-bytes=1KiB",
            "--store=mongodb",
        ])
        .unwrap();
        assert_eq!(config.store.gc_interval, None, "0: never");
        assert_eq!(config.store.kind, StoreKind::Mongodb);
        // A WebSocket that runs nothing idles like a kept-alive connection.
        assert_eq!(config.limits.ws_idle_timeout, Duration::from_secs(7));
        assert_eq!(
            config.limits.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(
            config.auth.summary(),
            "2 write and 1 read tokens; reads need a token"
        );
        assert_eq!(config.webhooks.delivery_max_age, Duration::from_secs(7200));
        assert_eq!(config.webhooks.deliveries_kept, 5);
        assert_eq!(config.uploads.max_session_bytes, Some(1024));
    }

    #[test]
    fn device_tokens_and_the_report_ttl_come_from_their_flags() {
        let set = config(&["--device-tokens=d-one,d-two", "--device-report-ttl=2m"]).unwrap();
        assert_eq!(
            set.auth.summary(),
            "0 write and 0 read tokens, 2 device tokens; reads need a token"
        );
        assert_eq!(set.device_report_ttl, Duration::from_secs(120));
        let default = config(&[]).unwrap();
        assert_eq!(default.device_report_ttl, Duration::from_secs(15 * 60));
    }

    fn device_file(dir: &std::path::Path, text: &str) -> String {
        let path = dir.join("device.json");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn a_mirror_is_read_from_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let device = device_file(
            dir.path(),
            r#"{"ram": 8, "libraries": [{"name": "torch"}]}"#,
        );
        let mirrored = config(&[
            "--mirror-upstream= https://repo.example.org/ ",
            "--mirror-device",
            &device,
            "--mirror-include=model:yolo/v8",
            "--mirror-token=secret",
            "--mirror-max-rate=1MiB",
            "--mirror-concurrency=0",
        ])
        .unwrap();
        let mirror = mirrored.mirror.expect("a mirror");
        assert_eq!(mirror.upstream, "https://repo.example.org");
        assert_eq!(mirror.devices.len(), 1);
        assert_eq!(mirror.include.len(), 1);
        assert_eq!(mirror.token.map(|t| t.0), Some("secret".to_string()));
        assert_eq!(mirror.max_rate, Some(1024 * 1024));
        assert_eq!(mirror.concurrency, 1, "clamped");
        assert!(config(&[]).unwrap().mirror.is_none());
    }

    #[test]
    fn a_pipeline_mirror_reads_the_inference_servers_files() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = device_file(
            dir.path(),
            r#"{"setup": {"service": {"servicer": "extended-inf-svc", "modules": ["custom"]},
                          "inference": {"inferencer": "tflite_inferencer"}},
                "model": {"model_name": "fall-detection", "model_alias": "production", "library": "tflite"},
                "preprocessing": [{"id": "custom.expansion", "parameters": {"axis": 0}}],
                "device": {"ram": 2, "platform": {"os": "linux", "arch": "arm64"}}}"#,
        );
        let mirrored = config(&[
            "--mirror-upstream=https://repo.example.org",
            "--mirror-pipeline",
            &pipeline,
        ])
        .unwrap();
        let mirror = mirrored.mirror.expect("a pipeline is scope enough");
        assert!(mirror.devices.is_empty());
        let site = &mirror.pipelines[0];
        assert_eq!(site.pipeline.services, ["extended-inf-svc"]);
        assert_eq!(site.pipeline.preprocessing, ["custom.expansion"]);
        assert_eq!(
            site.pipeline.inferencer.as_deref(),
            Some("tflite_inferencer")
        );
        assert_eq!(site.device.ram, Some(2.0));
        let refused = refusal(&[
            "--mirror-upstream=https://repo.example.org",
            "--mirror-pipeline",
            &device_file(dir.path(), r#"{"preprocesing": [], "device": {}}"#),
        ]);
        assert_eq!(refused.setting, "--mirror-pipeline");
        assert!(refused.reason.contains("preprocesing"), "{refused}");
    }

    #[test]
    fn contradictory_or_unreadable_settings_are_refused_with_the_flag_that_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let device = device_file(dir.path(), r#"{"ram": 8}"#);
        let missing = dir.path().join("missing.json").display().to_string();
        let mirror = |extra: &[&str]| {
            let mut flags = vec!["--mirror-upstream", "https://repo.example.org"];
            flags.extend_from_slice(extra);
            refusal(&flags)
        };
        let cases = [
            (
                mirror(&["--mirror-device", &device, "--store", "mongodb"]),
                "--mirror-upstream",
                "needs the embedded store",
            ),
            (
                refusal(&[
                    "--mirror-upstream",
                    "repo.example.org",
                    "--mirror-device",
                    &device,
                ]),
                "--mirror-upstream",
                "is not a URL",
            ),
            (
                refusal(&[
                    "--mirror-upstream",
                    "ftp://repo.example.org",
                    "--mirror-device",
                    &device,
                ]),
                "--mirror-upstream",
                "http or https",
            ),
            (
                mirror(&[]),
                "--mirror-device",
                "at least one --mirror-device",
            ),
            (
                mirror(&["--mirror-device", &missing]),
                "--mirror-device",
                "reading the device description",
            ),
            (
                mirror(&["--mirror-device", &device_file(dir.path(), "{")]),
                "--mirror-device",
                "is not JSON",
            ),
            (
                mirror(&[
                    "--mirror-device",
                    &device_file(dir.path(), r#"{"ramm": 8}"#),
                ]),
                "--mirror-device",
                "is not a DeviceInput",
            ),
            (
                mirror(&["--mirror-include", "yolo"]),
                "--mirror-include",
                "expected kind:key",
            ),
            (
                refusal(&["--tokens-file", &missing]),
                "--tokens-file",
                "reading the tokens file",
            ),
        ];
        for (error, setting, reason) in cases {
            assert_eq!(error.setting, setting, "{error}");
            assert!(error.reason.contains(reason), "{error}");
        }
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "write good\nadmin s3cret\n").unwrap();
        let error = refusal(&["--tokens-file", tokens.to_str().unwrap()]);
        assert!(error.reason.contains("line 2"), "{error}");
        assert!(
            !error.to_string().contains("s3cret"),
            "a token never reaches a message: {error}"
        );
    }
}
