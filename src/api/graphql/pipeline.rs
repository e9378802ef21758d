//! `resolvePipeline`: an inference server's whole configuration, resolved for one device.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, SimpleObject};
use serde::Serialize;
use utoipa::ToSchema;

use super::inputs::DeviceInput;
use super::types::{FileNeeds, Long, PlatformInfo};
use crate::api::error::GqlResultExt;
use crate::api::state::Links;
use crate::domain::pipeline::{ModelRef, Pipeline, ProblemCode, Resolution, Role};
use crate::domain::{Device, DomainError};
use crate::service::RepositoryService;

/// The model of a pipeline: a version, or an alias (`production`) that names one.
#[derive(InputObject)]
pub struct PipelineModelInput {
    pub name: String,
    pub version: Option<String>,
    pub alias: Option<String>,
}

/// What an inference server's configuration names: the model, the pre- and postprocessing transformations in
/// order, the services it fetches and the inferencer.
#[derive(InputObject)]
pub struct PipelineInput {
    pub model: Option<PipelineModelInput>,
    #[graphql(default)]
    pub preprocessing: Vec<ID>,
    #[graphql(default)]
    pub postprocessing: Vec<ID>,
    #[graphql(default)]
    pub services: Vec<ID>,
    pub inferencer: Option<ID>,
}

impl PipelineInput {
    pub fn into_domain(self) -> Result<Pipeline, DomainError> {
        let model = self
            .model
            .map(|m| match (m.version, m.alias) {
                (Some(version), None) => Ok(ModelRef::Version {
                    name: m.name,
                    version,
                }),
                (None, Some(alias)) => Ok(ModelRef::Alias {
                    name: m.name,
                    alias,
                }),
                _ => Err(DomainError::new(
                    "pipeline.model",
                    "give either version or alias",
                )),
            })
            .transpose()?;
        let ids = |list: Vec<ID>| list.into_iter().map(|id| id.0).collect();
        Ok(Pipeline {
            model,
            preprocessing: ids(self.preprocessing),
            postprocessing: ids(self.postprocessing),
            services: ids(self.services),
            inferencer: self.inferencer.map(|id| id.0),
        })
    }
}

/// Where a part sits in its pipeline.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[graphql(remote = "Role")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PipelineRole {
    Model,
    Preprocessing,
    Postprocessing,
    Service,
    Inferencer,
}

/// Why a pipeline would not start on the device.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[graphql(remote = "ProblemCode")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PipelineProblemCode {
    /// A transformation, service or inferencer named is not in the repository.
    MissingComponent,
    /// The model version, or the version its alias names, is not in the repository.
    MissingModelVersion,
    /// The component has no file yet.
    NoFile,
    /// None of the component's files runs on the device's platform.
    NoFileForPlatform,
    /// A part needs a GPU; the device has none.
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
    /// Two parts require one library in ranges that no version satisfies together.
    LibraryConflict,
    /// A part needs a model version that is neither on the device nor the pipeline's model.
    ModelAbsent,
}

/// One problem, about one part (`component`, `role`) or the pipeline as a whole (both null).
#[derive(SimpleObject, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineProblem {
    pub role: Option<PipelineRole>,
    /// The part's key (`transformation custom.expansion`, `model fall-detection pilot-2-2`).
    pub component: Option<String>,
    pub code: PipelineProblemCode,
    pub message: String,
}

/// The file a device fetches for a part.
#[derive(SimpleObject, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineFile {
    pub sha256: String,
    #[schema(value_type = u64)]
    pub size: Long,
    pub filename: String,
    /// The content-addressed URL of exactly this file.
    pub download_url: String,
    /// The build's platform; null for the platform-neutral default file.
    pub platform: Option<PlatformInfo>,
    /// The needs the device meets with this file: its component's, with the build's own figures in their place.
    pub needs: FileNeeds,
}

/// A part of the pipeline with the file chosen for the device (null when there is none: see `problems`).
#[derive(SimpleObject, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineComponent {
    pub role: PipelineRole,
    /// `model`, `transformation`, `service` or `inferencer`.
    pub kind: String,
    /// The part's key (`model fall-detection pilot-2-2`); for a model named by an alias, the version it names.
    pub key: String,
    pub file: Option<PipelineFile>,
}

/// The sums over the pipeline's distinct components: they share one process on the device.
#[derive(SimpleObject, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTotals {
    /// RAM in GB.
    pub ram: f64,
    /// GPU memory in GB.
    pub gpu_memory: f64,
    /// Storage in GB, besides the downloads.
    pub storage: f64,
    /// Whether some part needs a GPU.
    pub gpu: bool,
    #[schema(value_type = u64)]
    pub download_bytes: Long,
}

#[derive(SimpleObject, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineResolution {
    /// True when there are no problems: the pipeline starts on the device with these files.
    pub fits: bool,
    pub components: Vec<PipelineComponent>,
    pub totals: PipelineTotals,
    pub problems: Vec<PipelineProblem>,
    /// `sha256:` over every part and the file chosen for it: it changes exactly when what the device would
    /// fetch changes.
    pub lock: String,
}

impl PipelineResolution {
    pub fn new(resolution: Resolution, links: &Links) -> Self {
        let components = resolution
            .components
            .into_iter()
            .map(|c| PipelineComponent {
                role: c.role.into(),
                kind: c
                    .key
                    .as_ref()
                    .map_or("model", |k| k.kind().as_str())
                    .to_string(),
                key: c.key.as_ref().map_or(c.named.clone(), ToString::to_string),
                file: c.file.map(|(file, variant, needs)| PipelineFile {
                    download_url: links.named_blob_url(&file.sha256, &file.filename),
                    sha256: file.sha256,
                    size: Long(file.size),
                    filename: file.filename,
                    platform: variant.as_ref().map(|v| PlatformInfo::from(&v.platform)),
                    needs: FileNeeds {
                        storage: needs.storage,
                        ram: needs.ram,
                        gpu_memory: needs.gpu_memory,
                        gpu: Some(needs.gpu),
                    },
                }),
            })
            .collect();
        let totals = resolution.totals;
        Self {
            fits: resolution.fits,
            components,
            totals: PipelineTotals {
                ram: totals.ram,
                gpu_memory: totals.gpu_memory,
                storage: totals.storage,
                gpu: totals.gpu,
                download_bytes: Long(totals.download_bytes),
            },
            problems: resolution
                .problems
                .into_iter()
                .map(|p| PipelineProblem {
                    role: p.role.map(Into::into),
                    component: p.component,
                    code: p.code.into(),
                    message: p.message,
                })
                .collect(),
            lock: resolution.lock,
        }
    }
}

/// Resolves `pipeline` for `device` (the query's resolver).
pub async fn resolve(
    ctx: &Context<'_>,
    device: DeviceInput,
    pipeline: PipelineInput,
) -> async_graphql::Result<PipelineResolution> {
    let service = ctx.data::<Arc<RepositoryService>>()?;
    let links = ctx.data::<Links>()?;
    let device = Device::try_from(device).gql()?;
    let pipeline = pipeline.into_domain().gql()?;
    let resolution = service.resolve_pipeline(&pipeline, &device).await.gql()?;
    Ok(PipelineResolution::new(resolution, links))
}
