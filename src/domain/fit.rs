//! Which file of a component a device gets: the best build that runs on its platform and fits its means.
//!
//! The candidates are the variants that run on the device's platform (every variant when the device states no
//! platform) and the platform-neutral default file. Each is judged by the figures a file may state for itself (GPU,
//! RAM, GPU memory, storage: the component's, with a variant's own ([`FileNeeds`]) in their place); libraries and
//! models are the component's whatever the file, so they decide whether it runs ([`Device::runs`]), not which file.
//! Of those that fit, the device gets, in order: an accelerated build before any other, a per-platform build before
//! the default file, then the most demanding (most GPU memory, then most RAM: the biggest build the device can hold
//! is the one its author meant for it; of a figure the device leaves out, the least: what cannot be judged is not
//! risked), then the newest platform variant (`v8.2` before `v8`). A device that fits none learns why from the
//! nearest candidate: the one with the fewest unmet needs, the least demanding among equals.

use std::cmp::Ordering;

use super::filter::{NeedCode, Unmet};
use super::{Component, Device, FileNeeds, Needs, StoredFile, Variant};

/// The file a device gets, with the needs it must meet for it.
#[derive(Debug, Clone)]
pub struct Chosen<'a> {
    pub file: &'a StoredFile,
    /// `None` for the default file.
    pub variant: Option<&'a Variant>,
    /// The component's needs with the variant's figures in their place.
    pub needs: Needs,
}

/// The needs of a component's file: the component's (none for models), overridden by a variant's own figures.
pub fn file_needs(component: &Component, variant: Option<&Variant>) -> Needs {
    let base = component.spec.needs().cloned().unwrap_or_default();
    match variant.and_then(|v| v.needs.as_ref()) {
        Some(own) => own.over(&base),
        None => base,
    }
}

impl Device {
    /// A device of which only the platform is known (a download's `?platform=`): a GPU is assumed and no figure
    /// is checked, so only the platform and the builds' order decide.
    pub fn of_platform(platform: super::DevicePlatform) -> Device {
        Device {
            gpu: true,
            platform: Some(platform),
            ..Device::default()
        }
    }

    /// The best file of `component` for this device (see the module's rule), or every need the nearest candidate
    /// does not meet. A component without any file answers a single `NoFile`.
    pub fn choose<'a>(&self, component: &'a Component) -> Result<Chosen<'a>, Vec<Unmet>> {
        let mut candidates: Vec<Chosen<'a>> = component
            .variants
            .iter()
            .filter(|v| {
                self.platform
                    .as_ref()
                    .is_none_or(|platform| v.platform.runs_on(platform))
            })
            .map(|v| Chosen {
                file: &v.file,
                variant: Some(v),
                needs: file_needs(component, Some(v)),
            })
            .collect();
        if let Some(file) = &component.file {
            candidates.push(Chosen {
                file,
                variant: None,
                needs: file_needs(component, None),
            });
        }
        if candidates.is_empty() {
            if component.variants.is_empty() {
                return Err(vec![Unmet {
                    code: NeedCode::NoFile,
                    need: "file".into(),
                    wanted: "a file".into(),
                    has: format!("{} has no file yet", component.key),
                }]);
            }
            return Err(vec![self.platform_unmet(component)]);
        }
        let judged: Vec<(Chosen<'a>, Vec<Unmet>)> = candidates
            .into_iter()
            .map(|c| {
                let unmet = self.unmet_resources(&c.needs);
                (c, unmet)
            })
            .collect();
        if judged.iter().any(|(_, unmet)| unmet.is_empty()) {
            let best = judged
                .into_iter()
                .filter(|(_, unmet)| unmet.is_empty())
                .map(|(c, _)| c)
                .max_by(|a, b| better(self, a, b))
                .expect("one fits");
            return Ok(best);
        }
        let nearest = judged
            .into_iter()
            .min_by(|(a, ua), (b, ub)| {
                ua.len()
                    .cmp(&ub.len())
                    .then_with(|| demand(&a.needs).cmp(&demand(&b.needs)))
            })
            .map(|(_, unmet)| unmet)
            .unwrap_or_default();
        Err(nearest)
    }

    /// Whether the device runs `component`: its libraries and models are there and some file fits (a component
    /// without files is judged by its own needs, as before it has any).
    pub fn runs(&self, component: &Component) -> bool {
        self.unmet(component).is_empty()
    }

    /// Why the device cannot run `component` (empty exactly when [`Device::runs`] holds): the libraries and models
    /// it lacks, then what the nearest file asks for beyond its means.
    pub fn unmet(&self, component: &Component) -> Vec<Unmet> {
        let base = file_needs(component, None);
        if component.file.is_none() && component.variants.is_empty() {
            return self.unmet_needs(&base);
        }
        let mut unmet = self.unmet_requirements(&base);
        unmet.extend(self.choose(component).err().unwrap_or_default());
        unmet
    }

    fn platform_unmet(&self, component: &Component) -> Unmet {
        let platforms: Vec<String> = component
            .variants
            .iter()
            .map(|v| v.platform.to_string())
            .collect();
        let has = match &self.platform {
            Some(p) => format!("{}/{}", p.os, p.arch),
            None => "no platform".into(),
        };
        Unmet {
            code: NeedCode::Platform,
            need: "platform".into(),
            wanted: format!("one of {}", platforms.join(", ")),
            has,
        }
    }
}

/// Whether any variant of `component` states needs of its own (then only [`Device::choose`] judges it exactly).
pub fn has_file_needs(component: &Component) -> bool {
    component
        .variants
        .iter()
        .any(|v| v.needs.as_ref().is_some_and(|n| !FileNeeds::is_empty(n)))
}

/// How much a build asks for, to order builds: GPU memory, then RAM.
fn demand(needs: &Needs) -> (Gb, Gb) {
    (
        Gb(needs.gpu_memory.unwrap_or(0.0)),
        Gb(needs.ram.unwrap_or(0.0)),
    )
}

/// Gigabytes ordered as `f64::total_cmp` orders them (figures are validated finite and non-negative).
struct Gb(f64);

impl PartialEq for Gb {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Gb {}

impl PartialOrd for Gb {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Gb {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Which of two fitting builds `device` should get (the greater).
fn better(device: &Device, a: &Chosen<'_>, b: &Chosen<'_>) -> Ordering {
    // The biggest build of a figure the device states; the smallest of one it leaves out.
    let toward = |stated: bool, gb: Option<f64>| {
        let gb = gb.unwrap_or(0.0);
        Gb(if stated { gb } else { -gb })
    };
    let key = |c: &Chosen<'_>| {
        let platform = c.variant.map(|v| &v.platform);
        (
            platform.is_some_and(|p| p.accelerator.is_some()),
            platform.is_some(),
            toward(device.gpu_memory.is_some(), c.needs.gpu_memory),
            toward(device.ram.is_some(), c.needs.ram),
            platform.map(|p| p.rank()),
        )
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        ComponentKey, DevicePlatform, InferencerSpec, Kind, Platform, Spec, StoredFile,
    };

    fn stored(sha: &str) -> StoredFile {
        StoredFile {
            blob_id: sha.into(),
            size: 1,
            sha256: sha.into(),
            content_type: String::new(),
            filename: String::new(),
            uploaded_at: chrono::DateTime::default(),
            signatures: Vec::new(),
        }
    }

    /// An inferencer with 4-, 8- and 16-bit CUDA builds needing 6, 10 and 18 GB of GPU memory.
    fn builds() -> Component {
        let key = ComponentKey::with_id(Kind::Inferencer, "llm").unwrap();
        let spec = Spec::Inferencer(InferencerSpec {
            needs: Needs {
                gpu: true,
                ram: Some(4.0),
                ..Needs::default()
            },
            ..InferencerSpec::default()
        });
        let mut c = Component::new(key, spec, chrono::DateTime::default()).unwrap();
        for (precision, gpu_memory) in [("4bit", 6.0), ("8bit", 10.0), ("16bit", 18.0)] {
            c.variants.push(Variant {
                platform: Platform::new("linux", "amd64", None, Some("cuda"), None)
                    .unwrap()
                    .with_precision(Some(precision))
                    .unwrap(),
                file: stored(precision),
                needs: Some(FileNeeds {
                    gpu_memory: Some(gpu_memory),
                    ..FileNeeds::default()
                }),
            });
        }
        c
    }

    fn gpu_device(gpu_memory: f64) -> Device {
        let mut platform = DevicePlatform::parse("linux/amd64").unwrap();
        platform.accelerators.insert("cuda".into(), "8.9".into());
        Device {
            gpu: true,
            gpu_memory: Some(gpu_memory),
            ram: Some(16.0),
            platform: Some(platform),
            ..Device::default()
        }
    }

    #[test]
    fn the_most_demanding_build_that_fits_wins() {
        let c = builds();
        let pick = |gb: f64| {
            gpu_device(gb)
                .choose(&c)
                .map(|chosen| chosen.file.sha256.clone())
        };
        assert_eq!(pick(12.0).as_deref(), Ok("8bit"));
        let mut silent = gpu_device(0.0);
        silent.gpu_memory = None;
        assert_eq!(
            silent
                .choose(&c)
                .map(|chosen| chosen.file.sha256.clone())
                .as_deref(),
            Ok("4bit"),
            "GPU memory left out: the least demanding build, not the biggest"
        );
        assert_eq!(pick(24.0).as_deref(), Ok("16bit"));
        assert_eq!(pick(6.0).as_deref(), Ok("4bit"));
        let why = pick(4.0).unwrap_err();
        assert_eq!(why.len(), 1, "{why:?}");
        assert_eq!(why[0].code, NeedCode::GpuMemory);
        assert_eq!(
            (why[0].wanted.as_str(), why[0].has.as_str()),
            ("6 GB", "4 GB")
        );
        assert!(gpu_device(12.0).runs(&c));
        assert!(!gpu_device(4.0).runs(&c));
    }

    #[test]
    fn accelerated_builds_come_first_and_the_default_file_last() {
        let mut c = builds();
        c.file = Some(stored("default"));
        let mut cpu_only = gpu_device(24.0);
        cpu_only.platform.as_mut().unwrap().accelerators.clear();
        assert_eq!(cpu_only.choose(&c).unwrap().file.sha256, "default");
        c.variants.push(Variant {
            platform: Platform::new("linux", "amd64", None, None, None).unwrap(),
            file: stored("cpu"),
            needs: Some(FileNeeds {
                gpu: Some(false),
                ram: Some(30.0),
                ..FileNeeds::default()
            }),
        });
        assert_eq!(gpu_device(24.0).choose(&c).unwrap().file.sha256, "16bit");
        let mut big = gpu_device(24.0);
        big.ram = Some(32.0);
        big.platform.as_mut().unwrap().accelerators.clear();
        assert_eq!(big.choose(&c).unwrap().file.sha256, "cpu");
    }
}
