//! Whole pipelines: what an inference server's configuration (a model, pre- and postprocessing transformations,
//! services and an inferencer) resolves to on one device, and every reason it would not start there.
//!
//! How needs add up: the parts of a pipeline run in one inference server process on one device, so their RAM and
//! GPU memory add up, storage adds up with the bytes downloaded, and one part needing a GPU means the device needs
//! one. Each part's file is chosen on its own by [`Device::choose`]; the sums are then checked against the device.
//! A component named twice (the same transformation before and after the model) is fetched and loaded once and
//! counted once. Libraries are checked per part against the device, and across parts: two requirements on one
//! library that no version satisfies together are a conflict whatever the device has.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::filter::NeedCode;
use super::version::requirements_conflict;
use super::{Component, ComponentKey, Device, DomainError, Kind, Needs, StoredFile, Variant};

/// Most parts one pipeline may name.
pub const MAX_PARTS: usize = 256;

/// The model of a pipeline: a version, or an alias that names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Version { name: String, version: String },
    Alias { name: String, alias: String },
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Version { name, version } => write!(f, "model {name} {version}"),
            ModelRef::Alias { name, alias } => write!(f, "model {name}@{alias}"),
        }
    }
}

/// What a pipeline names, in the order the inference server loads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipeline {
    pub model: Option<ModelRef>,
    pub preprocessing: Vec<String>,
    pub postprocessing: Vec<String>,
    pub services: Vec<String>,
    pub inferencer: Option<String>,
}

/// The place of a part in its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Model,
    Preprocessing,
    Postprocessing,
    Service,
    Inferencer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Model => "model",
            Role::Preprocessing => "preprocessing",
            Role::Postprocessing => "postprocessing",
            Role::Service => "service",
            Role::Inferencer => "inferencer",
        }
    }
}

/// One part of a pipeline: what the configuration names and, once looked up, the component it is.
#[derive(Debug, Clone)]
pub struct Part {
    pub role: Role,
    /// The configuration's own words: `model fall-detection@production`, `transformation custom.expansion`.
    pub named: String,
    /// `None` when the name leads to no key (an alias that names no version).
    pub key: Option<ComponentKey>,
    pub component: Option<Component>,
}

impl Pipeline {
    /// The parts, in order, each with its key where the configuration gives it (model aliases are looked up by the
    /// caller). Ids that are no valid key, or more than [`MAX_PARTS`] parts, are refused.
    pub fn parts(&self) -> Result<Vec<Part>, DomainError> {
        let count = usize::from(self.model.is_some())
            + self.preprocessing.len()
            + self.postprocessing.len()
            + self.services.len()
            + usize::from(self.inferencer.is_some());
        if count > MAX_PARTS {
            return Err(DomainError::new(
                "pipeline",
                format!("names {count} components; at most {MAX_PARTS} are resolved at once"),
            ));
        }
        let mut parts = Vec::with_capacity(count);
        if let Some(model) = &self.model {
            let key = match model {
                ModelRef::Version { name, version } => {
                    Some(ComponentKey::model(name.clone(), version.clone())?)
                }
                ModelRef::Alias { name, alias } => {
                    super::validate_key_part("pipeline.model.name", name)?;
                    super::validate_alias(alias)?;
                    None
                }
            };
            parts.push(Part {
                role: Role::Model,
                named: model.to_string(),
                key,
                component: None,
            });
        }
        let ids = [
            (
                Role::Preprocessing,
                Kind::Transformation,
                &self.preprocessing,
            ),
            (
                Role::Postprocessing,
                Kind::Transformation,
                &self.postprocessing,
            ),
            (Role::Service, Kind::Service, &self.services),
        ];
        let inferencer = self.inferencer.iter().cloned().collect::<Vec<_>>();
        let ids = ids.into_iter().chain(std::iter::once((
            Role::Inferencer,
            Kind::Inferencer,
            &inferencer,
        )));
        for (role, kind, list) in ids {
            for id in list {
                let key = ComponentKey::with_id(kind, id.clone())?;
                parts.push(Part {
                    role,
                    named: format!("{} {id}", kind.as_str()),
                    key: Some(key),
                    component: None,
                });
            }
        }
        Ok(parts)
    }
}

/// Why a pipeline would not start on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    /// A transformation, service or inferencer the configuration names is not in the repository.
    MissingComponent,
    /// The model version (or the version the alias names) is not in the repository.
    MissingModelVersion,
    /// The component has no file yet.
    NoFile,
    /// None of the component's files runs on the device's platform.
    NoFileForPlatform,
    /// A part needs a GPU and the device has none.
    GpuRequired,
    /// One part, or all together, need more RAM than the device has.
    RamExceeded,
    /// One part, or all together, need more GPU memory than the device has.
    GpuMemoryExceeded,
    /// One part, or all together with the downloads, need more storage than the device has.
    StorageExceeded,
    /// A part needs a library the device does not have.
    LibraryMissing,
    /// The device has a library in a version a part refuses.
    LibraryVersion,
    /// Two parts require one library in ranges no version satisfies together.
    LibraryConflict,
    /// A part needs a model version that is neither on the device nor the pipeline's model.
    ModelAbsent,
}

/// One problem: the part it is about (`None` for the pipeline as a whole), a code and a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub role: Option<Role>,
    pub component: Option<String>,
    pub code: ProblemCode,
    pub message: String,
}

/// A part with the file the device would fetch.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub role: Role,
    pub named: String,
    pub key: Option<ComponentKey>,
    /// The file the device gets, its variant (`None`: the default file) and the needs it must meet for it.
    pub file: Option<(StoredFile, Option<Variant>, Needs)>,
}

/// The sums over the distinct components of a pipeline (see the module's rule).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub ram: f64,
    pub gpu_memory: f64,
    pub storage: f64,
    pub gpu: bool,
    pub download_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Resolution {
    pub fits: bool,
    pub components: Vec<Resolved>,
    pub totals: Totals,
    pub problems: Vec<Problem>,
    /// `sha256:` over every part's key and chosen file: it changes exactly when what the device fetches changes.
    pub lock: String,
}

/// Resolves `parts` (looked up by the caller) for `device`. `in_repository` says whether a model version a part
/// needs is in the repository, to tell the device's operator where to get it.
pub fn resolve(
    parts: Vec<Part>,
    device: &Device,
    in_repository: &dyn Fn(&str, &str) -> bool,
) -> Resolution {
    let mut problems = Vec::new();
    // The pipeline's own model will be on the device: parts that need it are satisfied.
    let mut device = device.clone();
    if let Some(Some(ComponentKey::Model(model))) = parts
        .iter()
        .find(|p| p.role == Role::Model && p.component.is_some())
        .map(|p| p.key.clone())
    {
        device.models.push((model.name, model.version));
    }
    let mut components = Vec::with_capacity(parts.len());
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut distinct: Vec<(String, Needs, &Component)> = Vec::new();
    let mut totals = Totals::default();
    for part in &parts {
        let label = part
            .key
            .as_ref()
            .map_or_else(|| part.named.clone(), ToString::to_string);
        let mut problem = |code: ProblemCode, message: String| {
            problems.push(Problem {
                role: Some(part.role),
                component: Some(label.clone()),
                code,
                message,
            })
        };
        let Some(component) = &part.component else {
            let (code, message) = match (part.role, &part.key) {
                (Role::Model, Some(key)) => (
                    ProblemCode::MissingModelVersion,
                    format!("{key} is not in the repository"),
                ),
                (Role::Model, None) => (
                    ProblemCode::MissingModelVersion,
                    match &part.named.split_once('@') {
                        Some((model, alias)) => format!("{model} has no alias {alias}"),
                        None => format!("{} names no version", part.named),
                    },
                ),
                _ => (
                    ProblemCode::MissingComponent,
                    format!("{} is not in the repository", part.named),
                ),
            };
            problem(code, message);
            components.push(Resolved {
                role: part.role,
                named: part.named.clone(),
                key: part.key.clone(),
                file: None,
            });
            continue;
        };
        let base = super::file_needs(component, None);
        for unmet in device.unmet_requirements(&base) {
            let (code, message) = match unmet.code {
                NeedCode::Library => (
                    ProblemCode::LibraryMissing,
                    format!(
                        "{label} needs {}; the device has {}",
                        unmet.wanted, unmet.has
                    ),
                ),
                NeedCode::LibraryVersion => (
                    ProblemCode::LibraryVersion,
                    format!(
                        "{label} needs {}; the device has {}",
                        unmet.wanted, unmet.has
                    ),
                ),
                _ => {
                    let (name, version) =
                        unmet.wanted.split_once(' ').unwrap_or((&unmet.wanted, ""));
                    let where_ = if in_repository(name, version) {
                        "the repository has it: add it to the device or make it the pipeline's model"
                    } else {
                        "the repository does not have it either"
                    };
                    (
                        ProblemCode::ModelAbsent,
                        format!(
                            "{label} needs model {}; the device has {} and the pipeline's model is another; {where_}",
                            unmet.wanted, unmet.has
                        ),
                    )
                }
            };
            problem(code, message);
        }
        match device.choose(component) {
            Ok(chosen) => {
                if seen.insert(component.key.to_string()) {
                    let needs = &chosen.needs;
                    totals.ram += needs.ram.unwrap_or(0.0);
                    totals.gpu_memory += needs.gpu_memory.unwrap_or(0.0);
                    totals.storage += needs.storage.unwrap_or(0.0);
                    totals.gpu |= needs.gpu;
                    totals.download_bytes += chosen.file.size;
                    distinct.push((label.clone(), needs.clone(), component));
                }
                components.push(Resolved {
                    role: part.role,
                    named: part.named.clone(),
                    key: part.key.clone(),
                    file: Some((chosen.file.clone(), chosen.variant.cloned(), chosen.needs)),
                });
            }
            Err(unmet) => {
                for unmet in unmet {
                    let code = match unmet.code {
                        NeedCode::NoFile => ProblemCode::NoFile,
                        NeedCode::Platform => ProblemCode::NoFileForPlatform,
                        NeedCode::Gpu => ProblemCode::GpuRequired,
                        NeedCode::Ram => ProblemCode::RamExceeded,
                        NeedCode::GpuMemory => ProblemCode::GpuMemoryExceeded,
                        _ => ProblemCode::StorageExceeded,
                    };
                    let message = match unmet.code {
                        NeedCode::NoFile => unmet.has.clone(),
                        NeedCode::Platform => format!(
                            "{label} has no file for {}: its files are for {}",
                            unmet.has,
                            unmet.wanted.trim_start_matches("one of ")
                        ),
                        NeedCode::Gpu => format!("{label} needs a GPU; the device has none"),
                        _ => format!(
                            "{label} needs {} of {} even in its smallest build that runs here; the device has {}",
                            unmet.wanted,
                            need_name(unmet.code),
                            unmet.has
                        ),
                    };
                    problem(code, message);
                }
                components.push(Resolved {
                    role: part.role,
                    named: part.named.clone(),
                    key: part.key.clone(),
                    file: None,
                });
            }
        }
    }
    problems.extend(sums_exceeded(&device, &totals, &distinct));
    problems.extend(conflicts(&distinct));
    let lock = lock(&components);
    Resolution {
        fits: problems.is_empty(),
        components,
        totals,
        problems,
        lock,
    }
}

fn need_name(code: NeedCode) -> &'static str {
    match code {
        NeedCode::Ram => "RAM",
        NeedCode::GpuMemory => "GPU memory",
        _ => "storage",
    }
}

/// The sums over the device's figures, each saying which parts make it up.
fn sums_exceeded(
    device: &Device,
    totals: &Totals,
    parts: &[(String, Needs, &Component)],
) -> Vec<Problem> {
    let download_gb = totals.download_bytes as f64 / 1e9;
    let checks = [
        (
            ProblemCode::RamExceeded,
            "RAM",
            totals.ram,
            device.ram,
            None,
        ),
        (
            ProblemCode::GpuMemoryExceeded,
            "GPU memory",
            totals.gpu_memory,
            device.gpu_memory,
            None,
        ),
        (
            ProblemCode::StorageExceeded,
            "storage",
            totals.storage + download_gb,
            device.storage,
            Some(download_gb),
        ),
    ];
    let mut problems = Vec::new();
    for (code, what, sum, has, downloads) in checks {
        let Some(has) = has else { continue };
        // `parts` are those whose file fits on its own (one that does not is its own problem): a sum over the
        // device's figure is the parts together, or one part's storage with the bytes it downloads.
        if sum <= has {
            continue;
        }
        let figure = |needs: &Needs| match code {
            ProblemCode::RamExceeded => needs.ram,
            ProblemCode::GpuMemoryExceeded => needs.gpu_memory,
            _ => needs.storage,
        };
        let mut shares: Vec<String> = parts
            .iter()
            .filter_map(|(label, needs, _)| {
                figure(needs)
                    .filter(|gb| *gb > 0.0)
                    .map(|gb| format!("{label} {gb} GB"))
            })
            .collect();
        if let Some(gb) = downloads {
            shares.push(format!("downloads {} GB", round(gb)));
        }
        problems.push(Problem {
            role: None,
            component: None,
            code,
            message: format!(
                "together the pipeline needs {} GB of {what} ({}); the device has {has} GB",
                round(sum),
                shares.join(", ")
            ),
        });
    }
    problems
}

/// Gigabytes to the byte: sums of small figures stay readable without showing tiny ones as 0.
fn round(gb: f64) -> f64 {
    (gb * 1e9).round() / 1e9
}

/// Pairs of parts whose requirements on one library no version satisfies together.
fn conflicts(parts: &[(String, Needs, &Component)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, (a, a_needs, _)) in parts.iter().enumerate() {
        for (b, b_needs, _) in &parts[i + 1..] {
            for (library, a_wants) in &a_needs.preinstalled_libraries {
                if let Some(b_wants) = b_needs.preinstalled_libraries.get(library)
                    && requirements_conflict(a_wants, b_wants)
                {
                    problems.push(Problem {
                        role: None,
                        component: Some(a.clone()),
                        code: ProblemCode::LibraryConflict,
                        message: format!(
                            "{a} needs {library} {a_wants} and {b} needs {library} {b_wants}: no version satisfies both"
                        ),
                    });
                }
            }
        }
    }
    problems
}

/// The digest of what the device fetches: each part's role, key and chosen file, in order.
fn lock(components: &[Resolved]) -> String {
    let mut text = String::new();
    for c in components {
        let key = c
            .key
            .as_ref()
            .map_or_else(|| c.named.clone(), ToString::to_string);
        let sha = c.file.as_ref().map_or("-", |(f, _, _)| f.sha256.as_str());
        text.push_str(&format!("{}\t{key}\t{sha}\n", c.role.as_str()));
    }
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    )
}

/// The model versions the parts need, by name: to ask the repository which of them it has.
pub fn models_needed(parts: &[Part]) -> BTreeMap<String, BTreeSet<String>> {
    let mut needed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for component in parts.iter().filter_map(|p| p.component.as_ref()) {
        if let Some(needs) = component.spec.needs() {
            for (name, version) in &needs.available_models {
                needed
                    .entry(name.clone())
                    .or_default()
                    .insert(version.clone());
            }
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ServiceSpec, Spec, StoredFile, TransformationSpec};

    fn with_file(key: ComponentKey, spec: Spec, size: u64) -> Component {
        let mut c = Component::new(key, spec, chrono::DateTime::default()).unwrap();
        c.file = Some(StoredFile {
            blob_id: format!("{size}"),
            size,
            sha256: format!("{size:064x}"),
            content_type: String::new(),
            filename: "f".into(),
            uploaded_at: chrono::DateTime::default(),
            signatures: Vec::new(),
        });
        c
    }

    fn part(role: Role, component: Component) -> Part {
        Part {
            role,
            named: component.key.to_string(),
            key: Some(component.key.clone()),
            component: Some(component),
        }
    }

    fn service(id: &str, ram: f64, storage: f64, size: u64) -> Component {
        let needs = Needs {
            ram: Some(ram),
            storage: Some(storage),
            ..Needs::default()
        };
        let key = ComponentKey::with_id(Kind::Service, id).unwrap();
        with_file(
            key,
            Spec::Service(ServiceSpec {
                description: String::new(),
                needs,
            }),
            size,
        )
    }

    #[test]
    fn needs_add_up_across_parts_and_one_part_counts_once() {
        let device = Device {
            ram: Some(3.0),
            storage: Some(10.0),
            ..Device::default()
        };
        let resize = {
            let key = ComponentKey::with_id(Kind::Transformation, "resize").unwrap();
            let needs = Needs {
                ram: Some(1.0),
                ..Needs::default()
            };
            with_file(
                key,
                Spec::Transformation(TransformationSpec {
                    needs,
                    ..TransformationSpec::default()
                }),
                10,
            )
        };
        let parts = vec![
            part(Role::Preprocessing, resize.clone()),
            part(Role::Postprocessing, resize),
            part(Role::Service, service("svc", 2.0, 1.0, 20)),
        ];
        let fits = resolve(parts.clone(), &device, &|_, _| false);
        assert!(fits.fits, "{:?}", fits.problems);
        assert_eq!(fits.totals.ram, 3.0, "resize is loaded once");
        assert_eq!(fits.totals.download_bytes, 30);
        let small = Device {
            ram: Some(2.5),
            ..device
        };
        let refused = resolve(parts, &small, &|_, _| false);
        let codes: Vec<_> = refused.problems.iter().map(|p| (p.code, p.role)).collect();
        assert_eq!(
            codes,
            [(ProblemCode::RamExceeded, None)],
            "{:?}",
            refused.problems
        );
        assert!(
            refused.problems[0].message.contains("3 GB"),
            "{}",
            refused.problems[0].message
        );
        assert_eq!(refused.lock, fits.lock, "the same files would be fetched");
    }

    #[test]
    fn one_parts_download_counts_against_storage() {
        let device = Device {
            storage: Some(1.0),
            ..Device::default()
        };
        // 0.5 GB of storage fits, but with its 600 MB download the service no longer does.
        let parts = vec![part(Role::Service, service("svc", 0.0, 0.5, 600_000_000))];
        let resolution = resolve(parts, &device, &|_, _| false);
        let codes: Vec<_> = resolution.problems.iter().map(|p| p.code).collect();
        assert_eq!(codes, [ProblemCode::StorageExceeded]);
        assert!(
            resolution.problems[0].message.contains("downloads 0.6 GB"),
            "{:?}",
            resolution.problems
        );
    }
}
