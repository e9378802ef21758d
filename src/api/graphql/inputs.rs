//! GraphQL input types and how they become domain values.

use crate::domain::{DevicePlatform, FileNeeds, Platform};
use std::collections::BTreeMap;

use async_graphql::{Enum, ID, InputObject, Json, MaybeUndefined};

use crate::domain::{
    ComponentFilter, Device, DomainError, InferencerSpec, Kind, LibraryWanted, ModelSpec,
    ModelWanted, Needs, NeedsFilter, ServiceSpec, Spec, TransformationSpec,
};

/// A library and a version: a PEP 440 version (`2.12.0`), a range (`>=2.12,<3`), or empty / `*` for any.
#[derive(InputObject, Clone)]
pub struct LibraryInput {
    pub name: String,
    #[graphql(default)]
    pub version: String,
}

/// A model by name and version.
#[derive(InputObject, Clone)]
pub struct ModelRefInput {
    pub name: String,
    pub version: String,
}

fn library_map(
    field: &str,
    libraries: Vec<LibraryInput>,
) -> Result<BTreeMap<String, String>, DomainError> {
    let mut map = BTreeMap::new();
    for library in libraries {
        if map.insert(library.name.clone(), library.version).is_some() {
            return Err(DomainError::new(
                field,
                format!("library {} is named twice", library.name),
            ));
        }
    }
    Ok(map)
}

fn model_map(
    field: &str,
    models: Vec<ModelRefInput>,
) -> Result<BTreeMap<String, String>, DomainError> {
    let mut map = BTreeMap::new();
    for model in models {
        if map.insert(model.name.clone(), model.version).is_some() {
            return Err(DomainError::new(
                field,
                format!("model {} is named twice", model.name),
            ));
        }
    }
    Ok(map)
}

/// What a component needs from the device that runs it.
#[derive(InputObject, Default)]
pub struct NeedsInput {
    /// Extra storage in GB.
    pub storage: Option<f64>,
    /// RAM in GB.
    pub ram: Option<f64>,
    #[graphql(default)]
    pub gpu: bool,
    /// GPU memory in GB.
    pub gpu_memory: Option<f64>,
    #[graphql(default)]
    pub preinstalled_libraries: Vec<LibraryInput>,
    #[graphql(default)]
    pub available_models: Vec<ModelRefInput>,
}

impl NeedsInput {
    pub fn into_domain(self) -> Result<Needs, DomainError> {
        Ok(Needs {
            storage: self.storage,
            ram: self.ram,
            gpu: self.gpu,
            gpu_memory: self.gpu_memory,
            preinstalled_libraries: library_map(
                "needs.preinstalledLibraries",
                self.preinstalled_libraries,
            )?,
            available_models: model_map("needs.availableModels", self.available_models)?,
        })
    }

    /// The needs of one per-platform build: the figures that replace its component's. `gpu: true` or any GPU
    /// memory make the build need a GPU; otherwise it keeps its component's GPU need. Libraries and models are the
    /// component's and are refused here.
    pub fn into_file_needs(self) -> Result<FileNeeds, DomainError> {
        if !self.preinstalled_libraries.is_empty() || !self.available_models.is_empty() {
            return Err(DomainError::new(
                "needs",
                "a build states storage, ram, gpu and gpuMemory of its own; libraries and models are its \
                 component's (update the component to change them)",
            ));
        }
        let needs = FileNeeds {
            storage: self.storage,
            ram: self.ram,
            gpu_memory: self.gpu_memory,
            gpu: self.gpu.then_some(true),
        };
        needs.validate()?;
        Ok(needs)
    }
}

/// A partial change of needs: fields left out stay as they are; `storage: null` or `ram: null` clears a figure;
/// a list given replaces the whole list.
#[derive(Clone, InputObject, Default)]
pub struct NeedsPatch {
    pub storage: MaybeUndefined<f64>,
    pub ram: MaybeUndefined<f64>,
    pub gpu_memory: MaybeUndefined<f64>,
    pub gpu: Option<bool>,
    pub preinstalled_libraries: Option<Vec<LibraryInput>>,
    pub available_models: Option<Vec<ModelRefInput>>,
}

impl NeedsPatch {
    pub fn apply(self, needs: &mut Needs) -> Result<(), DomainError> {
        self.storage.update_to(&mut needs.storage);
        self.ram.update_to(&mut needs.ram);
        self.gpu_memory.update_to(&mut needs.gpu_memory);
        if let Some(gpu) = self.gpu {
            needs.gpu = gpu;
        }
        if let Some(libraries) = self.preinstalled_libraries {
            needs.preinstalled_libraries = library_map("needs.preinstalledLibraries", libraries)?;
        }
        if let Some(models) = self.available_models {
            needs.available_models = model_map("needs.availableModels", models)?;
        }
        Ok(())
    }
}

#[derive(InputObject)]
pub struct CreateModelInput {
    pub name: String,
    pub version: String,
    #[graphql(default)]
    pub library: String,
    #[graphql(default)]
    pub description: String,
}

impl CreateModelInput {
    pub fn spec(&self) -> Spec {
        Spec::Model(ModelSpec {
            library: self.library.clone(),
            description: self.description.clone(),
        })
    }
}

/// Fields left out stay as they are.
#[derive(Clone, InputObject)]
pub struct UpdateModelInput {
    pub library: Option<String>,
    pub description: Option<String>,
}

#[derive(InputObject)]
pub struct CreateTransformationInput {
    pub id: ID,
    #[graphql(default)]
    pub description: String,
    /// Parameter name -> type name, e.g. `{"axis": "int"}`.
    pub parameter_types: Option<Json<BTreeMap<String, String>>>,
    /// Parameter name -> default value (any JSON), e.g. `{"axis": 0}`.
    pub default_values: Option<Json<serde_json::Map<String, serde_json::Value>>>,
    #[graphql(default)]
    pub outputs: Vec<String>,
    #[graphql(default)]
    pub needs: NeedsInput,
}

impl CreateTransformationInput {
    pub fn into_spec(self) -> Result<Spec, DomainError> {
        Ok(Spec::Transformation(TransformationSpec {
            description: self.description,
            parameter_types: self.parameter_types.map(|j| j.0).unwrap_or_default(),
            default_values: self.default_values.map(|j| j.0).unwrap_or_default(),
            outputs: self.outputs,
            needs: self.needs.into_domain()?,
        }))
    }
}

/// Fields left out stay as they are.
#[derive(Clone, InputObject)]
pub struct UpdateTransformationInput {
    pub description: Option<String>,
    pub parameter_types: Option<Json<BTreeMap<String, String>>>,
    pub default_values: Option<Json<serde_json::Map<String, serde_json::Value>>>,
    pub outputs: Option<Vec<String>>,
    pub needs: Option<NeedsPatch>,
}

impl UpdateTransformationInput {
    pub fn apply(self, spec: &mut TransformationSpec) -> Result<(), DomainError> {
        replace(&mut spec.description, self.description);
        replace(&mut spec.parameter_types, self.parameter_types.map(|j| j.0));
        replace(&mut spec.default_values, self.default_values.map(|j| j.0));
        replace(&mut spec.outputs, self.outputs);
        self.needs.unwrap_or_default().apply(&mut spec.needs)
    }
}

#[derive(InputObject)]
pub struct CreateServiceInput {
    pub id: ID,
    #[graphql(default)]
    pub description: String,
    #[graphql(default)]
    pub needs: NeedsInput,
}

impl CreateServiceInput {
    pub fn into_spec(self) -> Result<Spec, DomainError> {
        Ok(Spec::Service(ServiceSpec {
            description: self.description,
            needs: self.needs.into_domain()?,
        }))
    }
}

/// Fields left out stay as they are.
#[derive(Clone, InputObject)]
pub struct UpdateServiceInput {
    pub description: Option<String>,
    pub needs: Option<NeedsPatch>,
}

#[derive(InputObject)]
pub struct CreateInferencerInput {
    pub id: ID,
    #[graphql(default)]
    pub description: String,
    #[graphql(default)]
    pub library: String,
    #[graphql(default)]
    pub use_cuda: bool,
    #[graphql(default)]
    pub needs: NeedsInput,
}

impl CreateInferencerInput {
    pub fn into_spec(self) -> Result<Spec, DomainError> {
        Ok(Spec::Inferencer(InferencerSpec {
            description: self.description,
            library: self.library,
            use_cuda: self.use_cuda,
            needs: self.needs.into_domain()?,
        }))
    }
}

/// Fields left out stay as they are.
#[derive(Clone, InputObject)]
pub struct UpdateInferencerInput {
    pub description: Option<String>,
    pub library: Option<String>,
    pub use_cuda: Option<bool>,
    pub needs: Option<NeedsPatch>,
}

pub fn replace<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// What a device offers; see `runnableOn`.
#[derive(InputObject, Clone)]
pub struct DeviceInput {
    #[graphql(default)]
    pub gpu: bool,
    /// RAM in GB; left out, RAM is not checked.
    pub ram: Option<f64>,
    /// GPU memory in GB; left out, GPU memory is not checked.
    pub gpu_memory: Option<f64>,
    /// Free storage in GB; left out, storage is not checked.
    pub storage: Option<f64>,
    /// Installed libraries with their exact versions.
    #[graphql(default)]
    pub libraries: Vec<LibraryInput>,
    /// Models present on the device.
    #[graphql(default)]
    pub models: Vec<ModelRefInput>,
    /// The device's platform: components with per-platform files are listed only when one fits (or they have a
    /// platform-neutral default file).
    pub platform: Option<DevicePlatformInput>,
}

/// The platform a file is built for, as in OCI image indexes (`linux/arm64/v8`, `linux/arm/v7`), with an optional
/// accelerator. Given to an upload, the file becomes (or replaces) that platform's variant; left out, the file is
/// the platform-neutral default.
#[derive(InputObject, Clone)]
pub struct PlatformInput {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    /// Such as `cuda`, `tensorrt`, `openvino`, `npu`.
    pub accelerator: Option<String>,
    /// PEP 440 requirement on the device's accelerator version, such as `>=8.6` (a CUDA compute capability).
    pub accelerator_version: Option<String>,
    /// A label of the build (`4bit`, `fp16`): one platform holds one file per precision.
    pub precision: Option<String>,
}

impl PlatformInput {
    pub fn into_platform(self) -> Result<Platform, DomainError> {
        Platform::new(
            &self.os,
            &self.arch,
            self.variant.as_deref(),
            self.accelerator.as_deref(),
            self.accelerator_version.as_deref(),
        )?
        .with_precision(self.precision.as_deref())
    }
}

/// An accelerator a device has, with its version.
#[derive(InputObject, Clone)]
pub struct AcceleratorInput {
    pub name: String,
    pub version: String,
}

/// What a device is, for picking the file it runs.
#[derive(InputObject, Clone)]
pub struct DevicePlatformInput {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    #[graphql(default)]
    pub accelerators: Vec<AcceleratorInput>,
}

impl DevicePlatformInput {
    pub fn into_platform(self) -> Result<DevicePlatform, DomainError> {
        DevicePlatform::new(
            &self.os,
            &self.arch,
            self.variant.as_deref(),
            self.accelerators
                .into_iter()
                .map(|a| (a.name, a.version))
                .collect(),
        )
    }
}

impl Device {
    /// A device for a filter, where an invalid platform fits nothing instead of failing the request.
    pub(super) fn lenient(d: DeviceInput) -> Device {
        let platform = d.platform.clone();
        Device::try_from(DeviceInput {
            platform: None,
            ..d.clone()
        })
        .map(|mut device| {
            device.platform = platform.map(|p| {
                p.into_platform().unwrap_or_else(|_| DevicePlatform {
                    os: String::new(),
                    ..DevicePlatform::default()
                })
            });
            device
        })
        .unwrap_or_default()
    }
}

impl TryFrom<DeviceInput> for Device {
    type Error = DomainError;

    fn try_from(d: DeviceInput) -> Result<Self, DomainError> {
        Ok(Device {
            gpu: d.gpu,
            gpu_memory: d.gpu_memory,
            ram: d.ram,
            storage: d.storage,
            libraries: d
                .libraries
                .into_iter()
                .map(|l| (l.name, l.version))
                .collect(),
            models: d.models.into_iter().map(|m| (m.name, m.version)).collect(),
            platform: d
                .platform
                .map(DevicePlatformInput::into_platform)
                .transpose()?,
        })
    }
}

/// A library that components must need; `version` (a version or a range such as `>=2.12,<3`) narrows it down.
#[derive(InputObject)]
pub struct LibraryFilter {
    pub name: String,
    pub version: Option<String>,
}

/// A model that components must need; `version` narrows it down.
#[derive(InputObject)]
pub struct ModelNeededFilter {
    pub name: String,
    pub version: Option<String>,
}

/// Filters over needs; every field given must hold.
#[derive(InputObject, Default)]
pub struct NeedsFilterInput {
    /// Components that need a GPU (true) or do not (false).
    pub gpu: Option<bool>,
    /// Components that need at most this much RAM (GB).
    pub max_ram: Option<f64>,
    /// Components that need at most this much storage (GB).
    pub max_storage: Option<f64>,
    /// Components that need every one of these libraries.
    #[graphql(default)]
    pub libraries: Vec<LibraryFilter>,
    /// Components that need every one of these models.
    #[graphql(default)]
    pub models: Vec<ModelNeededFilter>,
    /// Components whose needs this device satisfies.
    pub runnable_on: Option<DeviceInput>,
}

impl From<NeedsFilterInput> for NeedsFilter {
    fn from(f: NeedsFilterInput) -> Self {
        NeedsFilter {
            gpu: f.gpu,
            max_ram: f.max_ram,
            max_storage: f.max_storage,
            libraries: f
                .libraries
                .into_iter()
                .map(|l| LibraryWanted {
                    name: l.name,
                    version: l.version,
                })
                .collect(),
            models: f
                .models
                .into_iter()
                .map(|m| ModelWanted {
                    name: m.name,
                    version: m.version,
                })
                .collect(),
            // An invalid platform here fits no file (the `runnableOn` query reports it as an error instead).
            runnable_on: f.runnable_on.map(Device::lenient),
        }
    }
}

#[derive(InputObject, Default)]
pub struct ModelFilter {
    /// Exactly this name: lists the versions of one model.
    pub name: Option<String>,
    /// Exactly this library (case-insensitive).
    pub library: Option<String>,
    /// Case-insensitive text in the name, version or description.
    pub search: Option<String>,
}

impl From<ModelFilter> for ComponentFilter {
    fn from(f: ModelFilter) -> Self {
        ComponentFilter {
            search: f.search,
            name: f.name,
            library: f.library,
            needs: NeedsFilter::default(),
        }
    }
}

/// Filter of transformations and services.
#[derive(InputObject, Default)]
#[graphql(name = "ComponentFilter")]
pub struct ComponentFilterInput {
    /// Case-insensitive text in the id or description.
    pub search: Option<String>,
    pub needs: Option<NeedsFilterInput>,
}

impl From<ComponentFilterInput> for ComponentFilter {
    fn from(f: ComponentFilterInput) -> Self {
        ComponentFilter {
            search: f.search,
            needs: f.needs.map(NeedsFilter::from).unwrap_or_default(),
            ..ComponentFilter::default()
        }
    }
}

#[derive(InputObject, Default)]
pub struct InferencerFilter {
    /// Case-insensitive text in the id or description.
    pub search: Option<String>,
    /// Exactly this library (case-insensitive).
    pub library: Option<String>,
    pub needs: Option<NeedsFilterInput>,
}

impl From<InferencerFilter> for ComponentFilter {
    fn from(f: InferencerFilter) -> Self {
        ComponentFilter {
            search: f.search,
            library: f.library,
            needs: f.needs.map(NeedsFilter::from).unwrap_or_default(),
            ..ComponentFilter::default()
        }
    }
}

/// The kinds of component that have needs.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RunnableKind {
    Transformation,
    Service,
    Inferencer,
}

impl From<RunnableKind> for Kind {
    fn from(k: RunnableKind) -> Self {
        match k {
            RunnableKind::Transformation => Kind::Transformation,
            RunnableKind::Service => Kind::Service,
            RunnableKind::Inferencer => Kind::Inferencer,
        }
    }
}
