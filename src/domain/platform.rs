//! Per-platform variants of a component's file and which device runs which, after the OCI image index and
//! containerd's platform matcher.
//!
//! A file's platform is `os/arch[/variant]` plus an optional accelerator (`cuda`, `tensorrt`, `openvino`, `npu`...)
//! with a PEP 440 requirement on the device's accelerator version (a CUDA compute capability, a TensorRT version).
//! Names are normalised as containerd does: `x86_64` is `amd64`, `aarch64` is `arm64`, `armhf` is `arm/v7`,
//! `armel` is `arm/v6`, `i386`/`i686` are `386`; an absent variant is `v8` on arm64, `v7` on arm, `v1` on amd64.
//! A device runs a file when the os is the same and:
//! - arm: the file's variant is at most the device's (`arm/v7` runs v7, v6, v5);
//! - arm64: the file's variant is at most the device's, as `(major, minor)` (`v8.2` runs v8, v8.1, v8.2);
//! - amd64: the file's micro-architecture level is at most the device's (`v3` runs v1, v2, v3), and `386` files
//!   run there too;
//! - any other architecture: the same variant;
//! - a file with an accelerator needs that accelerator on the device, in a version its requirement accepts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::version::Requirement;
use super::{DomainError, StoredFile};

/// The platform a file is built for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    /// Normalised: always set on arm, arm64 and amd64.
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub accelerator: Option<String>,
    /// PEP 440 requirement on the device's accelerator version; absent accepts any.
    #[serde(default)]
    pub accelerator_version: Option<String>,
    /// A free-form label of the build (`4bit`, `fp16`): one platform may hold several builds, one per precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

/// What a device is, for picking files: its platform and the accelerators it has, by name, with their versions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevicePlatform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    pub accelerators: BTreeMap<String, String>,
}

/// One more file of a component, for one platform (and precision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub platform: Platform,
    pub file: StoredFile,
    /// What this build needs instead of its component's needs, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<FileNeeds>,
}

/// The needs a per-platform file states for itself: a 4-bit build of a model needs far less memory than its 16-bit
/// build. Each figure that is set replaces the component's; libraries and models stay the component's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileNeeds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<bool>,
}

impl FileNeeds {
    pub fn validate(&self) -> Result<(), DomainError> {
        super::component::validate_gigabytes("needs.storage", self.storage)?;
        super::component::validate_gigabytes("needs.ram", self.ram)?;
        super::component::validate_gigabytes("needs.gpuMemory", self.gpu_memory)
    }

    /// The component's needs with this file's figures in their place.
    pub fn over(&self, base: &super::Needs) -> super::Needs {
        super::Needs {
            storage: self.storage.or(base.storage),
            ram: self.ram.or(base.ram),
            gpu_memory: self.gpu_memory.or(base.gpu_memory),
            gpu: self.gpu.unwrap_or(base.gpu),
            ..base.clone()
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == FileNeeds::default()
    }

    /// GPU memory implies a GPU: a build that states some and says nothing of the GPU needs one.
    pub fn normalised(mut self) -> Self {
        if self.gpu.is_none() && self.gpu_memory.is_some_and(|gb| gb > 0.0) {
            self.gpu = Some(true);
        }
        self
    }
}

fn clean(field: &str, value: &str) -> Result<String, DomainError> {
    let value = value.trim().to_ascii_lowercase();
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(value)
    } else {
        Err(DomainError::new(
            field,
            "must be 1 to 64 letters, digits, '.', '_' or '-'",
        ))
    }
}

/// os, arch and variant as containerd normalises them.
fn normalise(
    os: &str,
    arch: &str,
    variant: Option<&str>,
) -> Result<(String, String, Option<String>), DomainError> {
    let os = clean("platform.os", os)?;
    let arch = clean("platform.arch", arch)?;
    let variant = variant
        .filter(|v| !v.trim().is_empty())
        .map(|v| clean("platform.variant", v))
        .transpose()?;
    let (arch, implied) = match arch.as_str() {
        "x86_64" | "x86-64" => ("amd64".to_string(), None),
        "aarch64" => ("arm64".to_string(), None),
        "armhf" => ("arm".to_string(), Some("v7")),
        "armel" => ("arm".to_string(), Some("v6")),
        "i386" | "i686" | "x86" => ("386".to_string(), None),
        _ => (arch, None),
    };
    let variant = variant
        .or(implied.map(str::to_string))
        .or(match arch.as_str() {
            "arm64" => Some("v8".to_string()),
            "arm" => Some("v7".to_string()),
            "amd64" => Some("v1".to_string()),
            _ => None,
        });
    if let Some(v) = &variant
        && matches!(arch.as_str(), "arm" | "arm64" | "amd64")
        && level(v).is_none()
    {
        return Err(DomainError::new(
            "platform.variant",
            format!("{v} is not a variant of {arch} (such as v7 or v8.2)"),
        ));
    }
    Ok((os, arch, variant))
}

/// `v8.2` -> (8, 2); `v7` -> (7, 0).
fn level(variant: &str) -> Option<(u32, u32)> {
    let digits = variant.strip_prefix('v')?;
    let (major, minor) = digits.split_once('.').unwrap_or((digits, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

impl Platform {
    pub fn new(
        os: &str,
        arch: &str,
        variant: Option<&str>,
        accelerator: Option<&str>,
        accelerator_version: Option<&str>,
    ) -> Result<Self, DomainError> {
        let (os, arch, variant) = normalise(os, arch, variant)?;
        let accelerator = accelerator
            .filter(|a| !a.trim().is_empty())
            .map(|a| clean("platform.accelerator", a))
            .transpose()?;
        let accelerator_version = accelerator_version
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if accelerator_version.is_some() && accelerator.is_none() {
            return Err(DomainError::new(
                "platform.acceleratorVersion",
                "needs an accelerator",
            ));
        }
        if let Some(requirement) = &accelerator_version
            && (requirement.len() > 128
                || matches!(Requirement::parse(requirement), Requirement::Verbatim(_)))
        {
            return Err(DomainError::new(
                "platform.acceleratorVersion",
                "must be a PEP 440 version or specifier set, such as `>=8.6` or `==10.*`",
            ));
        }
        Ok(Self {
            os,
            arch,
            variant,
            accelerator,
            accelerator_version,
            precision: None,
        })
    }

    /// The same platform for the build of `precision` (`4bit`, `fp16`...); empty text is none.
    pub fn with_precision(mut self, precision: Option<&str>) -> Result<Self, DomainError> {
        self.precision = precision
            .filter(|p| !p.trim().is_empty())
            .map(|p| clean("platform.precision", p))
            .transpose()?;
        Ok(self)
    }

    /// Whether a device with `device` runs this platform's files.
    pub fn runs_on(&self, device: &DevicePlatform) -> bool {
        if self.os != device.os {
            return false;
        }
        let arch_ok = match (self.arch.as_str(), device.arch.as_str()) {
            ("386", "amd64") => true,
            (file, dev) if file != dev => false,
            ("arm" | "arm64" | "amd64", _) => {
                match (
                    self.variant.as_deref().and_then(level),
                    device.variant.as_deref().and_then(level),
                ) {
                    (Some(file), Some(dev)) => file <= dev,
                    _ => false,
                }
            }
            _ => self.variant == device.variant,
        };
        let accelerator_ok = match &self.accelerator {
            None => true,
            Some(name) => device.accelerators.get(name).is_some_and(|version| {
                self.accelerator_version
                    .as_deref()
                    .is_none_or(|required| Requirement::parse(required).is_satisfied_by(version))
            }),
        };
        arch_ok && accelerator_ok
    }

    /// How well a fitting file suits: accelerated builds first, then the newest variant.
    pub(super) fn rank(&self) -> (bool, Option<(u32, u32)>) {
        (
            self.accelerator.is_some(),
            self.variant.as_deref().and_then(level),
        )
    }
}

/// Splits `os/arch[/variant]`, as in `docker --platform`; `field` names the input in the error.
pub fn split_platform<'a>(
    text: &'a str,
    field: &str,
) -> Result<(&'a str, &'a str, Option<&'a str>), DomainError> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok((*os, *arch, None)),
        [os, arch, variant] => Ok((*os, *arch, Some(*variant))),
        _ => Err(DomainError::new(
            field,
            "must be `os/arch` or `os/arch/variant`, such as `linux/arm64` or `linux/arm/v7`",
        )),
    }
}

impl DevicePlatform {
    /// `os/arch[/variant]`, as in `docker --platform`.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let (os, arch, variant) = split_platform(text, "platform")?;
        Self::new(os, arch, variant, BTreeMap::new())
    }

    pub fn new(
        os: &str,
        arch: &str,
        variant: Option<&str>,
        accelerators: BTreeMap<String, String>,
    ) -> Result<Self, DomainError> {
        let (os, arch, variant) = normalise(os, arch, variant)?;
        let accelerators = accelerators
            .into_iter()
            .map(|(name, version)| Ok((clean("device.platform.accelerators", &name)?, version)))
            .collect::<Result<_, DomainError>>()?;
        Ok(Self {
            os,
            arch,
            variant,
            accelerators,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        if let Some(accelerator) = &self.accelerator {
            write!(f, " {accelerator}")?;
            if let Some(version) = &self.accelerator_version {
                write!(f, " {version}")?;
            }
        }
        if let Some(precision) = &self.precision {
            write!(f, " ({precision})")?;
        }
        Ok(())
    }
}

/// The file of a component for a device: the best fitting variant, else the platform-neutral default file.
pub fn file_for<'a>(
    default: Option<&'a StoredFile>,
    variants: &'a [Variant],
    device: &DevicePlatform,
) -> Option<(&'a StoredFile, Option<&'a Platform>)> {
    variants
        .iter()
        .filter(|v| v.platform.runs_on(device))
        .max_by_key(|v| v.platform.rank())
        .map(|v| (&v.file, Some(&v.platform)))
        .or(default.map(|f| (f, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform::new(os, arch, variant, None, None).unwrap()
    }

    fn device(text: &str) -> DevicePlatform {
        DevicePlatform::parse(text).unwrap()
    }

    #[test]
    fn arm_runs_older_variants() {
        let v7 = device("linux/arm/v7");
        assert!(file("linux", "arm", Some("v6")).runs_on(&v7));
        assert!(file("linux", "arm", Some("v5")).runs_on(&v7));
        assert!(file("linux", "armhf", None).runs_on(&v7));
        assert!(!file("linux", "arm", Some("v8")).runs_on(&v7));
        assert!(!file("linux", "arm64", None).runs_on(&v7));
        assert!(
            file("linux", "arm", None).runs_on(&v7),
            "arm defaults to v7"
        );
        assert!(!file("linux", "arm", Some("v7")).runs_on(&device("linux/arm/v6")));
    }

    #[test]
    fn arm64_and_amd64_levels() {
        let arm64 = device("linux/aarch64");
        assert_eq!(arm64.variant.as_deref(), Some("v8"));
        assert!(file("linux", "arm64", Some("v8")).runs_on(&arm64));
        assert!(!file("linux", "arm64", Some("v8.2")).runs_on(&arm64));
        assert!(file("linux", "arm64", Some("v8.2")).runs_on(&device("linux/arm64/v9.0")));
        let amd64 = device("linux/x86_64/v3");
        assert!(file("linux", "amd64", None).runs_on(&amd64));
        assert!(file("linux", "amd64", Some("v3")).runs_on(&amd64));
        assert!(!file("linux", "amd64", Some("v4")).runs_on(&amd64));
        assert!(file("linux", "386", None).runs_on(&amd64));
        assert!(!file("windows", "amd64", None).runs_on(&amd64));
    }

    #[test]
    fn accelerators_need_a_fitting_version() {
        let cuda = Platform::new("linux", "amd64", None, Some("cuda"), Some(">=8.6")).unwrap();
        let mut gpu = device("linux/amd64");
        assert!(!cuda.runs_on(&gpu), "no accelerator");
        gpu.accelerators.insert("cuda".into(), "8.9".into());
        assert!(cuda.runs_on(&gpu));
        gpu.accelerators.insert("cuda".into(), "7.5".into());
        assert!(!cuda.runs_on(&gpu));
        assert!(Platform::new("linux", "amd64", None, None, Some(">=1")).is_err());
        assert!(Platform::new("linux", "amd64", None, Some("cuda"), Some("latest")).is_err());
        assert!(Platform::new("linux", "arm", Some("vx"), None, None).is_err());
    }

    #[test]
    fn the_best_fitting_variant_wins() {
        let stored = |sha: &str| StoredFile {
            blob_id: sha.into(),
            size: 1,
            sha256: sha.into(),
            content_type: String::new(),
            filename: String::new(),
            uploaded_at: chrono::DateTime::default(),
            signatures: Vec::new(),
        };
        let variants = vec![
            Variant {
                needs: None,
                platform: file("linux", "arm", Some("v6")),
                file: stored("v6"),
            },
            Variant {
                needs: None,
                platform: file("linux", "arm", Some("v7")),
                file: stored("v7"),
            },
        ];
        let default = stored("default");
        let pick = |d: &str| {
            file_for(Some(&default), &variants, &device(d)).map(|(f, _)| f.sha256.clone())
        };
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("v7"));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some("v6"));
        assert_eq!(pick("linux/amd64").as_deref(), Some("default"));
        assert!(file_for(None, &variants, &device("linux/arm/v5")).is_none());
    }
}
