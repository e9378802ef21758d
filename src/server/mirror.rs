//! The edge mirror's configuration, from `--mirror-*` flags.

use std::path::Path;

use anyhow::{Context, bail};

use crate::domain::Device;

use crate::cli::{ServeArgs, StoreKind};
use crate::service::mirror::{MirrorConfig, MirrorDevice, parse_include};

/// The mirror the flags describe; `None` without `--mirror-upstream`.
pub fn mirror_config(args: &ServeArgs) -> anyhow::Result<Option<MirrorConfig>> {
    let flags = &args.mirror;
    let Some(upstream) = flags.mirror_upstream.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if args.store != StoreKind::Embedded {
        bail!("an edge mirror needs the embedded store (--store embedded)");
    }
    let url = reqwest::Url::parse(upstream)
        .with_context(|| format!("--mirror-upstream {upstream:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--mirror-upstream must be an http or https URL");
    }
    if flags.mirror_devices.is_empty() && flags.mirror_include.is_empty() {
        bail!("a mirror needs at least one --mirror-device (or --mirror-include)");
    }
    let mut devices = Vec::new();
    for path in &flags.mirror_devices {
        let (input, device) = load_device(path).context("--mirror-device")?;
        devices.push(MirrorDevice { input, device });
    }
    let include = flags
        .mirror_include
        .iter()
        .map(|text| parse_include(text).map_err(|e| anyhow::anyhow!("--mirror-include {e}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(MirrorConfig {
        upstream: upstream.trim_end_matches('/').to_string(),
        token: flags.mirror_token.as_ref().map(|t| t.0.clone()),
        devices,
        include,
        max_rate: flags.mirror_max_rate.map(|r| r.as_u64()),
        concurrency: flags.mirror_concurrency.max(1),
        serve_stale: flags.mirror_serve_stale,
        partial_dir: args.data_dir.join("mirror-partial"),
        max_file_size: args.max_upload_size.as_u64(),
    }))
}

/// A device description file (JSON of the shape of GraphQL's `DeviceInput`): as JSON, and as the domain's device.
pub fn load_device(path: &Path) -> anyhow::Result<(serde_json::Value, Device)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the device description {}", path.display()))?;
    let input: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the device description {} is not JSON", path.display()))?;
    let device = crate::domain::parse_device(&input).map_err(|e| {
        anyhow::anyhow!(
            "the device description {} is not a DeviceInput: {e}",
            path.display()
        )
    })?;
    Ok((input, device))
}
