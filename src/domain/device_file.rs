//! The device description a file gives (`--mirror-device`, `dump --device`): JSON of the shape of GraphQL's
//! `DeviceInput`, so that the same text serves a `runnableOn` query and the server's own configuration.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Device, DevicePlatform};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    #[serde(default)]
    gpu: bool,
    #[serde(rename = "gpuMemory")]
    gpu_memory: Option<f64>,
    ram: Option<f64>,
    storage: Option<f64>,
    #[serde(default)]
    libraries: Vec<Library>,
    #[serde(default)]
    models: Vec<Model>,
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Library {
    name: String,
    #[serde(default)]
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
    #[serde(default)]
    accelerators: Vec<Accelerator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Accelerator {
    name: String,
    version: String,
}

/// The device a description names, or why it names none.
pub fn parse_device(json: &serde_json::Value) -> Result<Device, String> {
    let file = DeviceFile::deserialize(json).map_err(|e| e.to_string())?;
    let platform = file
        .platform
        .map(|p| {
            let accelerators: BTreeMap<String, String> = p
                .accelerators
                .into_iter()
                .map(|a| (a.name, a.version))
                .collect();
            DevicePlatform::new(&p.os, &p.arch, p.variant.as_deref(), accelerators)
        })
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(Device {
        gpu: file.gpu,
        gpu_memory: file.gpu_memory,
        ram: file.ram,
        storage: file.storage,
        libraries: file
            .libraries
            .into_iter()
            .map(|l| (l.name, l.version))
            .collect(),
        models: file
            .models
            .into_iter()
            .map(|m| (m.name, m.version))
            .collect(),
        platform,
    })
    .and_then(|device: Device| {
        device
            .validate()
            .map(|()| device)
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_names_a_device() {
        let device = parse_device(&serde_json::json!({
            "ram": 4, "gpu": true,
            "libraries": [{"name": "torch", "version": "2.3.1"}, {"name": "numpy"}],
            "models": [{"name": "det", "version": "1"}],
            "platform": {"os": "linux", "arch": "arm64", "accelerators": [{"name": "cuda", "version": "8.7"}]}
        }))
        .unwrap();
        assert_eq!(device.ram, Some(4.0));
        assert!(device.gpu);
        assert_eq!(device.libraries.len(), 2);
        assert_eq!(device.platform.unwrap().arch, "arm64");
    }

    #[test]
    fn unknown_fields_and_bad_platforms_are_refused() {
        assert!(parse_device(&serde_json::json!({ "ramm": 4 })).is_err());
        assert!(parse_device(&serde_json::json!({ "platform": {"os": "", "arch": "x"} })).is_err());
    }
}
