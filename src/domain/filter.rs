//! Which components a listing returns: filters over metadata and needs, and the device match behind `runnableOn`.

use std::collections::{BTreeMap, HashMap};

use super::version::{Requirement, requirement_matches};
use super::{Component, DomainError, Needs};

/// What a device offers. `runnableOn` returns the components whose needs it satisfies:
/// - `gpu`: a component that needs a GPU runs only where `gpu` is true;
/// - `ram`, `gpu_memory`, `storage` (GB): a component's need must be at most the device's figure; `None` leaves it unchecked;
/// - `libraries`: every library the component needs is installed, in a version its requirement accepts
///   (see [`super::version`]);
/// - `models`: every model the component needs is present in exactly the version named (model versions such as
///   `pilot-2-1` are labels, not PEP 440); a required version of `*` or empty accepts any version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Device {
    pub gpu: bool,
    /// GPU memory in GB, checked like `ram`.
    pub gpu_memory: Option<f64>,
    pub ram: Option<f64>,
    pub storage: Option<f64>,
    pub libraries: BTreeMap<String, String>,
    pub models: Vec<(String, String)>,
    /// With a platform, a component is listed only when its default file is platform-neutral (or it has none
    /// yet and no variants either) or one of its variants runs on it (see [`super::platform`]).
    pub platform: Option<super::DevicePlatform>,
}

impl Device {
    /// Whether some file of `component` runs on this device's platform.
    pub fn has_file_for(&self, component: &Component) -> bool {
        let Some(platform) = &self.platform else {
            return true;
        };
        if component.variants.is_empty() {
            return true;
        }
        super::file_for(component.file.as_ref(), &component.variants, platform).is_some()
    }
}

impl Device {
    /// Refuses figures no device has: negative, infinite or NaN GB.
    pub fn validate(&self) -> Result<(), DomainError> {
        for (field, gb) in [
            ("device.ram", self.ram),
            ("device.gpuMemory", self.gpu_memory),
            ("device.storage", self.storage),
        ] {
            super::component::validate_gigabytes(field, gb)?;
        }
        Ok(())
    }

    pub fn satisfies(&self, needs: &Needs) -> bool {
        self.satisfies_with(needs, &mut VersionMemo::default())
    }

    fn satisfies_with(&self, needs: &Needs, memo: &mut VersionMemo) -> bool {
        let fits = |need: Option<f64>, has: Option<f64>| match has {
            Some(has) => need.unwrap_or(0.0) <= has,
            None => true,
        };
        (!needs.gpu || self.gpu)
            && fits(needs.ram, self.ram)
            && fits(needs.gpu_memory, self.gpu_memory)
            && fits(needs.storage, self.storage)
            && needs.preinstalled_libraries.iter().all(|(name, required)| {
                self.libraries.contains_key(name)
                    && memo.remember(name, required, || self.has_library(name, required))
            })
            && needs
                .available_models
                .iter()
                .all(|(name, version)| self.has_model(name, version))
    }

    /// Each of `needs` this device does not meet, with what is wanted and what the device has (empty exactly when
    /// [`Device::satisfies`] holds).
    pub fn unmet_needs(&self, needs: &Needs) -> Vec<Unmet> {
        let mut unmet = self.unmet_resources(needs);
        unmet.extend(self.unmet_requirements(needs));
        unmet
    }

    /// The figures of `needs` a file can state for itself (GPU, RAM, GPU memory, storage) that this device does
    /// not meet.
    pub fn unmet_resources(&self, needs: &Needs) -> Vec<Unmet> {
        let mut unmet = Vec::new();
        if needs.gpu && !self.gpu {
            unmet.push(Unmet::new(
                NeedCode::Gpu,
                "gpu".into(),
                "a GPU".into(),
                "no GPU".into(),
            ));
        }
        for (code, need, wanted, has) in [
            (NeedCode::Ram, "ram", needs.ram, self.ram),
            (
                NeedCode::GpuMemory,
                "gpuMemory",
                needs.gpu_memory,
                self.gpu_memory,
            ),
            (NeedCode::Storage, "storage", needs.storage, self.storage),
        ] {
            if let (Some(wanted), Some(has)) = (wanted, has)
                && wanted > has
            {
                unmet.push(Unmet::new(
                    code,
                    need.into(),
                    format!("{wanted} GB"),
                    format!("{has} GB"),
                ));
            }
        }
        unmet
    }

    /// The libraries and models of `needs` this device lacks: a component's whatever the file.
    pub fn unmet_requirements(&self, needs: &Needs) -> Vec<Unmet> {
        let mut unmet = Vec::new();
        for (name, required) in &needs.preinstalled_libraries {
            if !self.has_library(name, required) {
                let wanted = match required.trim() {
                    "" | "*" => format!("{name} (any version)"),
                    range => format!("{name} {range}"),
                };
                let (code, has) = match self.libraries.get(name) {
                    Some(installed) => (NeedCode::LibraryVersion, format!("{name} {installed}")),
                    None => (NeedCode::Library, format!("no {name}")),
                };
                unmet.push(Unmet::new(code, format!("library {name}"), wanted, has));
            }
        }
        for (name, version) in &needs.available_models {
            if !self.has_model(name, version) {
                let present: Vec<&str> = self
                    .models
                    .iter()
                    .filter(|(have, _)| have == name)
                    .map(|(_, v)| v.as_str())
                    .collect();
                let has = if present.is_empty() {
                    format!("no model {name}")
                } else {
                    format!("{name} {}", present.join(", "))
                };
                unmet.push(Unmet::new(
                    NeedCode::Model,
                    format!("model {name}"),
                    format!("{name} {version}"),
                    has,
                ));
            }
        }
        unmet
    }

    /// Whether the device runs `component`, remembering library verdicts across a listing: a component whose files
    /// all share its needs is judged from them and its platforms; one whose builds state needs of their own, build
    /// by build ([`Device::runs`]).
    fn runs_with(&self, component: &Component, memo: &mut VersionMemo) -> bool {
        match component.spec.needs() {
            Some(needs) if !super::fit::has_file_needs(component) => {
                self.satisfies_with(needs, memo) && self.has_file_for(component)
            }
            None if !super::fit::has_file_needs(component) => self.has_file_for(component),
            _ => self.runs(component),
        }
    }

    /// Whether the device has library `name` in a version that `required` accepts.
    pub fn has_library(&self, name: &str, required: &str) -> bool {
        self.libraries
            .get(name)
            .is_some_and(|installed| Requirement::parse(required).is_satisfied_by(installed))
    }

    /// Whether the device has model `name` in the version `required` names.
    pub fn has_model(&self, name: &str, required: &str) -> bool {
        self.models.iter().any(|(have_name, have_version)| {
            have_name == name && version_label_matches(required, have_version)
        })
    }
}

fn version_label_matches(required: &str, present: &str) -> bool {
    let required = required.trim();
    required.is_empty() || required == "*" || required == present
}

/// A need a device does not meet: which (`ram`, `library torch`...), what the component wants, what the device has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub code: NeedCode,
    pub need: String,
    pub wanted: String,
    pub has: String,
}

impl Unmet {
    pub fn new(code: NeedCode, need: String, wanted: String, has: String) -> Self {
        Unmet {
            code,
            need,
            wanted,
            has,
        }
    }
}

/// The kind of an unmet need, for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeedCode {
    Gpu,
    Ram,
    GpuMemory,
    Storage,
    /// The device does not have the library.
    Library,
    /// The device has the library in a version the requirement refuses.
    LibraryVersion,
    Model,
    /// No file runs on the device's platform.
    Platform,
    /// The component has no file at all.
    NoFile,
}

/// A library a component must need; `version` (a version or a range) narrows it down.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryWanted {
    pub name: String,
    pub version: Option<String>,
}

impl LibraryWanted {
    /// Whether a component that needs this library in `required` is wanted.
    pub fn accepts(&self, required: &str) -> bool {
        self.version
            .as_deref()
            .is_none_or(|version| requirement_matches(required, version))
    }
}

/// A model a component must need; `version` narrows it down to one version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWanted {
    pub name: String,
    pub version: Option<String>,
}

/// Filters over needs; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NeedsFilter {
    pub gpu: Option<bool>,
    pub max_ram: Option<f64>,
    pub max_storage: Option<f64>,
    pub libraries: Vec<LibraryWanted>,
    pub models: Vec<ModelWanted>,
    pub runnable_on: Option<Device>,
}

impl NeedsFilter {
    pub fn is_empty(&self) -> bool {
        *self == NeedsFilter::default()
    }

    pub fn matches(&self, needs: &Needs) -> bool {
        self.matches_with(
            needs,
            &mut VersionMemo::default(),
            &mut VersionMemo::default(),
        )
    }

    fn matches_with(
        &self,
        needs: &Needs,
        wanted_memo: &mut VersionMemo,
        device_memo: &mut VersionMemo,
    ) -> bool {
        self.matches_without_device(needs, wanted_memo)
            && self
                .runnable_on
                .as_ref()
                .is_none_or(|device| device.satisfies_with(needs, device_memo))
    }

    /// Every field but `runnable_on`, which judges a component's files rather than its needs alone.
    fn matches_without_device(&self, needs: &Needs, wanted_memo: &mut VersionMemo) -> bool {
        let at_most =
            |need: Option<f64>, max: Option<f64>| max.is_none_or(|max| need.unwrap_or(0.0) <= max);
        self.gpu.is_none_or(|gpu| needs.gpu == gpu)
            && at_most(needs.ram, self.max_ram)
            && at_most(needs.storage, self.max_storage)
            && self.libraries.iter().all(|wanted| {
                needs
                    .preinstalled_libraries
                    .get(&wanted.name)
                    .is_some_and(|required| match wanted.version.as_deref() {
                        None => true,
                        Some(version) => {
                            wanted_memo.remember(version, required, || wanted.accepts(required))
                        }
                    })
            })
            && self.models.iter().all(|wanted| {
                needs
                    .available_models
                    .get(&wanted.name)
                    .is_some_and(|required| wanted.version.as_deref().is_none_or(|v| v == required))
            })
    }
}

/// Results of PEP 440 comparisons of components' requirement texts against one fixed side: by library name for a
/// device (one installed version each), by the wanted text for a search. A catalogue repeats a few requirements across
/// many components, so a listing parses each distinct one once instead of once per component.
#[derive(Debug, Default)]
struct VersionMemo(HashMap<String, HashMap<String, bool>>);

impl VersionMemo {
    fn remember(&mut self, fixed: &str, required: &str, compute: impl FnOnce() -> bool) -> bool {
        if let Some(known) = self.0.get(fixed).and_then(|m| m.get(required)) {
            return *known;
        }
        let result = compute();
        self.0
            .entry(fixed.to_owned())
            .or_default()
            .insert(required.to_owned(), result);
        result
    }
}

/// Everything a listing can filter on. Fields that do not apply to a kind are refused by the service before a
/// filter reaches a store, so a store may assume that only applicable fields are set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComponentFilter {
    /// Case-insensitive substring of the id (models: name or version) or the description.
    pub search: Option<String>,
    /// Models only: exactly this name (lists the versions of one model).
    pub name: Option<String>,
    /// Models and inferencers: exactly this library (case-insensitive).
    pub library: Option<String>,
    /// Transformations, services and inferencers.
    pub needs: NeedsFilter,
}

impl ComponentFilter {
    pub fn matches(&self, component: &Component) -> bool {
        self.matcher().matches(component)
    }

    /// The filter prepared for testing many components with the same answers as [`ComponentFilter::matches`].
    pub fn matcher(&self) -> Matcher<'_> {
        Matcher {
            filter: self,
            search: self.search.as_deref().map(str::to_lowercase),
            wanted_memo: VersionMemo::default(),
            device_memo: VersionMemo::default(),
        }
    }
}

/// A [`ComponentFilter`] applied to many components in a row (one listing).
#[derive(Debug)]
pub struct Matcher<'f> {
    filter: &'f ComponentFilter,
    search: Option<String>,
    wanted_memo: VersionMemo,
    device_memo: VersionMemo,
}

impl Matcher<'_> {
    pub fn filter(&self) -> &ComponentFilter {
        self.filter
    }

    pub fn matches(&mut self, component: &Component) -> bool {
        let filter = self.filter;
        let search_ok = self.search.as_deref().is_none_or(|search| {
            component
                .key
                .search_text()
                .iter()
                .chain(std::iter::once(&component.spec.description()))
                .any(|text| text.to_lowercase().contains(search))
        });
        let name_ok = filter.name.as_deref().is_none_or(|name| {
            matches!(&component.key, crate::domain::ComponentKey::Model(m) if m.name == name)
        });
        let library_ok = filter.library.as_deref().is_none_or(|library| {
            component
                .spec
                .library()
                .is_some_and(|l| l.eq_ignore_ascii_case(library))
        });
        let needs_ok = match component.spec.needs() {
            Some(needs) => filter
                .needs
                .matches_without_device(needs, &mut self.wanted_memo),
            None => filter.needs.is_empty(),
        };
        let mut device_ok = || {
            filter
                .needs
                .runnable_on
                .as_ref()
                .is_none_or(|device| device.runs_with(component, &mut self.device_memo))
        };
        search_ok && name_ok && library_ok && needs_ok && device_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(gpu: bool, ram: f64, libs: &[(&str, &str)], models: &[(&str, &str)]) -> Needs {
        Needs {
            gpu_memory: None,
            storage: Some(1.0),
            ram: Some(ram),
            gpu,
            preinstalled_libraries: libs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            available_models: models
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn device() -> Device {
        Device {
            gpu: false,
            gpu_memory: None,
            ram: Some(4.0),
            storage: Some(10.0),
            libraries: [("tensorflow".to_string(), "2.13.1".to_string())].into(),
            models: vec![("fall-detection".into(), "pilot-2-1".into())],
            platform: None,
        }
    }

    fn service_needing(needs: Needs) -> Component {
        let key =
            crate::domain::ComponentKey::with_id(crate::domain::Kind::Service, "svc").unwrap();
        let spec = crate::domain::Spec::Service(crate::domain::ServiceSpec {
            description: String::new(),
            needs,
        });
        Component::new(key, spec, chrono::DateTime::default()).unwrap()
    }

    #[test]
    fn unmet_needs_say_what_is_wanted_and_what_the_device_has() {
        let d = device();
        let cases = [
            needs(false, 2.0, &[("tensorflow", ">=2.12,<3")], &[]),
            needs(
                true,
                8.0,
                &[("tensorflow", ">=2.14"), ("torch", "")],
                &[("fall-detection", "pilot-3")],
            ),
            needs(false, 4.5, &[], &[("other", "1")]),
        ];
        for needs in &cases {
            let component = service_needing(needs.clone());
            assert_eq!(
                d.unmet(&component).is_empty(),
                d.satisfies(needs),
                "{needs:?}"
            );
        }
        let unmet = d.unmet(&service_needing(cases[1].clone()));
        let shown: Vec<(&str, &str, &str)> = unmet
            .iter()
            .map(|u| (u.need.as_str(), u.wanted.as_str(), u.has.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("gpu", "a GPU", "no GPU"),
                ("ram", "8 GB", "4 GB"),
                (
                    "library tensorflow",
                    "tensorflow >=2.14",
                    "tensorflow 2.13.1"
                ),
                ("library torch", "torch (any version)", "no torch"),
                (
                    "model fall-detection",
                    "fall-detection pilot-3",
                    "fall-detection pilot-2-1"
                ),
            ]
        );
    }

    #[test]
    fn device_satisfies_needs_within_its_means() {
        let d = device();
        assert!(d.satisfies(&needs(false, 2.0, &[("tensorflow", ">=2.12,<3")], &[])));
        assert!(d.satisfies(&needs(false, 4.0, &[], &[("fall-detection", "pilot-2-1")])));
        assert!(!d.satisfies(&needs(true, 2.0, &[], &[])), "no gpu");
        assert!(!d.satisfies(&needs(false, 4.5, &[], &[])), "too little ram");
        assert!(!d.satisfies(&needs(false, 1.0, &[("tensorflow", "2.12.0")], &[])));
        assert!(
            !d.satisfies(&needs(false, 1.0, &[("torch", "")], &[])),
            "missing lib"
        );
        assert!(!d.satisfies(&needs(false, 1.0, &[], &[("fall-detection", "pilot-3")])));
    }

    #[test]
    fn needs_filter_combines_all_fields() {
        let n = needs(true, 8.0, &[("torch", "2.1.0")], &[("yolo", "v8")]);
        let mut f = NeedsFilter {
            gpu: Some(true),
            max_ram: Some(8.0),
            ..NeedsFilter::default()
        };
        assert!(f.matches(&n));
        f.libraries.push(LibraryWanted {
            name: "torch".into(),
            version: Some(">=2,<3".into()),
        });
        assert!(f.matches(&n));
        f.models.push(ModelWanted {
            name: "yolo".into(),
            version: Some("v5".into()),
        });
        assert!(!f.matches(&n));
    }
}
