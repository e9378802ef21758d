//! What a device reports about itself (`POST /devices/{id}/report`): its hardware, in the terms of `DeviceInput`,
//! what it runs and how that went since its last report. The domain validates a report, names the device's
//! hardware class and rules on deletions of what live devices run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ComponentKey, Device, DomainError, Refusal, parse_device, validate_key_part};

/// Most entries a report may list as running: a device runs a handful of components, not a catalogue.
pub const MAX_RUNNING: usize = 64;
/// Largest report body: a device with [`MAX_RUNNING`] entries and many libraries stays far below it.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Most libraries (and accelerators) a report may name.
pub const MAX_LIBRARIES: usize = 128;
/// Largest count a report may give: the largest integer every JSON client and BSON's signed 64 bits hold exactly.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// A device's hardware as it reported it: what `DeviceInput` says, kept as plain data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceHardware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<ReportedPlatform>,
    #[serde(default)]
    pub gpu: bool,
    /// GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<f64>,
    /// GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<f64>,
    /// GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<f64>,
    /// Library name -> version.
    #[serde(default)]
    pub libraries: BTreeMap<String, String>,
}

/// A device's platform as normalised by [`super::DevicePlatform::new`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportedPlatform {
    pub os: String,
    pub arch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Accelerator name -> version.
    #[serde(default)]
    pub accelerators: BTreeMap<String, String>,
}

/// One component a device runs: its key and, when the device knows it, the sha256 of the file it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    #[serde(flatten)]
    pub key: ComponentKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// How inference went on the device since its previous report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub errors: u64,
    /// The 99th percentile latency in milliseconds; absent without requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// The latest report of a device, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub id: String,
    pub hardware: DeviceHardware,
    /// See [`hardware_class`]; kept with the report so that stores can filter and index it.
    pub hardware_class: String,
    pub running: Vec<Running>,
    /// [`running_slot`] of each running entry, deduplicated: what stores index to count devices running a key.
    pub running_slots: Vec<String>,
    pub health: Health,
    /// Who sent it (the token's label).
    pub reported_by: String,
    pub received_at: DateTime<Utc>,
}

/// The body of a report, as the device sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    /// Of the shape of GraphQL's `DeviceInput` (the same text as `--mirror-device`).
    #[serde(default)]
    device: Option<serde_json::Value>,
    #[serde(default)]
    running: Vec<Running>,
    #[serde(default)]
    health: Health,
}

/// The text a store indexes for a running key: `kind/id` or `model/name/version` (key parts hold no `/`, nor
/// control characters, which some backends' JSON paths choke on).
pub fn running_slot(key: &ComponentKey) -> String {
    format!("{}/{}", key.kind(), key.path_segments().join("/"))
}

/// Validates a device id: it is a key part (it names a path segment and a stored record).
pub fn validate_device_id(id: &str) -> Result<(), DomainError> {
    validate_key_part("device id", id)
}

fn finite_non_negative(field: &str, value: Option<f64>) -> Result<(), DomainError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(DomainError::new(
            field,
            "must be a finite number at least 0",
        )),
        _ => Ok(()),
    }
}

/// Reads and validates a device's report; `received_at` is when it arrived, `by` who sent it.
pub fn parse_report(
    id: &str,
    body: &[u8],
    by: &str,
    received_at: DateTime<Utc>,
) -> Result<DeviceReport, DomainError> {
    validate_device_id(id)?;
    if body.len() > MAX_REPORT_BYTES {
        return Err(DomainError::new(
            "report",
            format!("must be at most {MAX_REPORT_BYTES} bytes"),
        ));
    }
    let body: ReportBody =
        serde_json::from_slice(body).map_err(|e| DomainError::new("report", e.to_string()))?;
    let device = match &body.device {
        Some(json) => parse_device(json).map_err(|e| DomainError::new("report.device", e))?,
        None => Device::default(),
    };
    let hardware = DeviceHardware {
        platform: device.platform.map(|p| ReportedPlatform {
            os: p.os,
            arch: p.arch,
            variant: p.variant,
            accelerators: p.accelerators,
        }),
        gpu: device.gpu,
        gpu_memory: device.gpu_memory,
        ram: device.ram,
        storage: device.storage,
        libraries: device.libraries,
    };
    finite_non_negative("report.device.gpuMemory", hardware.gpu_memory)?;
    finite_non_negative("report.device.ram", hardware.ram)?;
    finite_non_negative("report.device.storage", hardware.storage)?;
    finite_non_negative("report.health.p99Ms", body.health.p99_ms)?;
    let accelerators = hardware
        .platform
        .as_ref()
        .map_or(0, |p| p.accelerators.len());
    if hardware.libraries.len() > MAX_LIBRARIES || accelerators > MAX_LIBRARIES {
        return Err(DomainError::new(
            "report.device",
            format!("may name at most {MAX_LIBRARIES} libraries and {MAX_LIBRARIES} accelerators"),
        ));
    }
    if body.running.len() > MAX_RUNNING {
        return Err(DomainError::new(
            "report.running",
            format!("may list at most {MAX_RUNNING} entries"),
        ));
    }
    if body.health.requests > MAX_COUNT {
        return Err(DomainError::new(
            "report.health.requests",
            format!("must be at most {MAX_COUNT}"),
        ));
    }
    if body.health.errors > body.health.requests {
        return Err(DomainError::new(
            "report.health.errors",
            "must not exceed requests",
        ));
    }
    let mut running_slots = Vec::with_capacity(body.running.len());
    for entry in &body.running {
        entry.key.validate()?;
        if let Some(sha256) = &entry.sha256 {
            super::Sha256::parse(sha256)
                .map_err(|e| DomainError::new("report.running.sha256", e.to_string()))?;
        }
        let slot = running_slot(&entry.key);
        if !running_slots.contains(&slot) {
            running_slots.push(slot);
        }
    }
    Ok(DeviceReport {
        id: id.to_string(),
        hardware_class: hardware_class(&hardware),
        hardware,
        running: body.running,
        running_slots,
        health: body.health,
        reported_by: by.to_string(),
        received_at,
    })
}

/// The memory bucket of a device: GPU memory when it reports some, else RAM, rounded to the nearest power of two
/// GB on a log scale (a board sold as 8 GB reports 7.4 usable, and must not fall into the 4 GB class).
fn memory_bucket(hardware: &DeviceHardware) -> Option<String> {
    let (label, gb) = match (hardware.gpu_memory, hardware.ram) {
        (Some(gpu), _) if gpu > 0.0 => ("gpu", gpu),
        (_, Some(ram)) if ram > 0.0 => ("ram", ram),
        _ => return None,
    };
    if gb < 0.75 {
        return Some(format!("{label}<1g"));
    }
    let exponent = gb.log2().round().clamp(0.0, 20.0) as u32;
    Some(format!("{label}{}g", 1u64 << exponent))
}

/// A device's hardware class: `os/arch[/variant]`, then `+accelerator` for each accelerator by name (versions
/// left out: a driver update does not move a device to another class), then `@` and the memory bucket, e.g.
/// `linux/arm64/v8+cuda@gpu8g`. A device without a platform is `unknown`.
pub fn hardware_class(hardware: &DeviceHardware) -> String {
    let mut class = match &hardware.platform {
        Some(p) => {
            let mut text = format!("{}/{}", p.os, p.arch);
            if let Some(variant) = &p.variant {
                text.push('/');
                text.push_str(variant);
            }
            for name in p.accelerators.keys() {
                text.push('+');
                text.push_str(name);
            }
            text
        }
        None => "unknown".to_string(),
    };
    if let Some(bucket) = memory_bucket(hardware) {
        class.push('@');
        class.push_str(&bucket);
    }
    class
}

/// The in-use rule of a deletion: `live_devices` live devices report running `key`; unless `force`, that refuses
/// it, naming the count.
pub fn check_in_use(key: &ComponentKey, live_devices: u64, force: bool) -> Result<(), Refusal> {
    if live_devices == 0 || force {
        return Ok(());
    }
    Err(Refusal::InUse {
        key: key.clone(),
        devices: live_devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<DeviceReport, DomainError> {
        parse_report(
            "jetson-1",
            body.to_string().as_bytes(),
            "dev",
            super::super::now(),
        )
    }

    #[test]
    fn a_report_names_its_hardware_class_and_what_it_runs() {
        let report = parse(serde_json::json!({
            "device": {"platform": {"os": "linux", "arch": "arm64",
                "accelerators": [{"name": "cuda", "version": "12.2"}]}, "gpu": true, "gpuMemory": 7.4, "ram": 8},
            "running": [{"kind": "model", "name": "det", "version": "2", "sha256": "a".repeat(64)},
                        {"kind": "service", "id": "svc"}],
            "health": {"requests": 100, "errors": 2, "p99Ms": 41.5}
        }))
        .unwrap();
        assert_eq!(report.hardware_class, "linux/arm64/v8+cuda@gpu8g");
        assert_eq!(report.running_slots, ["model/det/2", "service/svc"]);
        assert_eq!(report.health.p99_ms, Some(41.5));
    }

    #[test]
    fn classes_ignore_accelerator_versions_and_bucket_memory() {
        let with = |gpu_memory: Option<f64>, ram: Option<f64>, version: &str| {
            hardware_class(&DeviceHardware {
                platform: Some(ReportedPlatform {
                    os: "linux".into(),
                    arch: "amd64".into(),
                    variant: Some("v1".into()),
                    accelerators: [("cuda".to_string(), version.to_string())].into(),
                }),
                gpu_memory,
                ram,
                ..Default::default()
            })
        };
        assert_eq!(
            with(Some(24.0), None, "12.1"),
            with(Some(23.5), None, "11.8")
        );
        assert_eq!(with(None, Some(16.0), "12"), "linux/amd64/v1+cuda@ram16g");
        assert_eq!(with(None, Some(0.5), "12"), "linux/amd64/v1+cuda@ram<1g");
        assert_eq!(with(None, None, "12"), "linux/amd64/v1+cuda");
        assert_eq!(hardware_class(&DeviceHardware::default()), "unknown");
    }

    #[test]
    fn bad_reports_are_refused_with_the_field() {
        let refused = |body: serde_json::Value| parse(body).unwrap_err().to_string();
        assert!(
            refused(serde_json::json!({"health": {"requests": 1, "errors": 2}})).contains("errors")
        );
        assert!(refused(serde_json::json!({"health": {"p99Ms": -1}})).contains("p99Ms"));
        let huge = serde_json::json!({"health": {"requests": u64::MAX, "errors": 0}});
        assert!(refused(huge).contains("requests"));
        assert!(refused(serde_json::json!({"device": {"ram": -4}})).contains("ram"));
        assert!(
            refused(serde_json::json!({"running": [{"kind": "model", "id": "x"}]}))
                .contains("report")
        );
        assert!(refused(serde_json::json!({"extra": 1})).contains("extra"));
        let many: Vec<_> = (0..=MAX_RUNNING)
            .map(|i| serde_json::json!({"kind": "service", "id": format!("s{i}")}))
            .collect();
        assert!(refused(serde_json::json!({ "running": many })).contains("at most"));
        assert!(parse_report("a/b", b"{}", "dev", super::super::now()).is_err());
    }

    #[test]
    fn a_live_device_keeps_what_it_runs_unless_forced() {
        let key = ComponentKey::model("det", "2").unwrap();
        assert!(check_in_use(&key, 0, false).is_ok());
        assert!(matches!(
            check_in_use(&key, 3, false),
            Err(Refusal::InUse { devices: 3, .. })
        ));
        assert!(check_in_use(&key, 3, true).is_ok());
    }
}
