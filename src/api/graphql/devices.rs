//! `devices(filter)` and `device(id)`: the live devices' latest reports (`POST /devices/{id}/report`), who runs
//! what, by hardware class, and when each was last seen.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use super::events::ComponentKind;
use super::types::{Library, Long};
use crate::api::error::GqlResultExt;
use crate::domain::{ComponentKey, DeviceReport, Kind};
use crate::service::RepositoryService;
use crate::service::devices::DeviceFilter;

/// A live device as it last reported itself.
#[derive(SimpleObject)]
#[graphql(name = "ReportedDevice")]
pub struct ReportedDevice {
    pub id: String,
    /// `os/arch[/variant]`, then `+accelerator` for each accelerator by name, then `@` and the memory bucket
    /// (GPU memory, else RAM, to the nearest power of two GB): `linux/arm64/v8+cuda@gpu8g`. `unknown` without a
    /// platform.
    pub hardware_class: String,
    /// When its latest report arrived.
    pub last_seen: DateTime<Utc>,
    /// The label of the token it reported with.
    pub reported_by: String,
    pub platform: Option<ReportedPlatform>,
    pub gpu: bool,
    /// GB.
    pub gpu_memory: Option<f64>,
    /// GB.
    pub ram: Option<f64>,
    /// GB.
    pub storage: Option<f64>,
    pub libraries: Vec<Library>,
    /// What it runs.
    pub running: Vec<RunningComponent>,
    /// How inference went since its previous report.
    pub health: DeviceHealth,
}

/// A device's platform, as reported.
#[derive(SimpleObject)]
pub struct ReportedPlatform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    pub accelerators: Vec<Library>,
}

/// A component a device runs: its key and the sha256 of the file it runs, when it said.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct RunningComponent {
    #[graphql(skip)]
    pub key: ComponentKey,
    pub kind: ComponentKind,
    /// The id (transformations, services, inferencers).
    pub id: Option<String>,
    /// A model's name and version.
    pub name: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
}

#[ComplexObject]
impl RunningComponent {
    /// Whether `sha256` is a file the component holds now (its default file or one of its builds): false once that
    /// file was replaced (replacing is not refused while devices run it) or the component deleted; null when the
    /// device sent no sha256.
    async fn current(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<bool>> {
        let Some(sha256) = &self.sha256 else {
            return Ok(None);
        };
        let service = ctx.data::<Arc<RepositoryService>>()?;
        let found = service.find(&self.key).await.gql()?;
        Ok(Some(
            found.is_some_and(|c| c.files().any(|f| &f.sha256 == sha256)),
        ))
    }
}

/// Requests, errors and p99 latency since the previous report.
#[derive(SimpleObject)]
pub struct DeviceHealth {
    pub requests: Long,
    pub errors: Long,
    pub p99_ms: Option<f64>,
}

/// A component, by kind and either `id` or a model's `name` and `version`.
#[derive(InputObject)]
pub struct RunningInput {
    pub kind: ComponentKind,
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
}

impl RunningInput {
    fn key(&self) -> Result<ComponentKey, crate::domain::DomainError> {
        match Kind::from(self.kind) {
            Kind::Model => ComponentKey::model(
                self.name.clone().unwrap_or_default(),
                self.version.clone().unwrap_or_default(),
            ),
            kind => ComponentKey::with_id(kind, self.id.clone().unwrap_or_default()),
        }
    }
}

/// Which live devices to list.
#[derive(InputObject, Default)]
pub struct DevicesFilter {
    /// Only devices of this hardware class.
    pub hardware_class: Option<String>,
    /// Only devices that report running this component.
    pub running: Option<RunningInput>,
}

impl From<DeviceReport> for ReportedDevice {
    fn from(r: DeviceReport) -> Self {
        let pairs = |map: std::collections::BTreeMap<String, String>| {
            map.into_iter()
                .map(|(name, version)| Library { name, version })
                .collect()
        };
        let h = r.hardware;
        ReportedDevice {
            id: r.id,
            hardware_class: r.hardware_class,
            last_seen: r.received_at,
            reported_by: r.reported_by,
            platform: h.platform.map(|p| ReportedPlatform {
                os: p.os,
                arch: p.arch,
                variant: p.variant,
                accelerators: pairs(p.accelerators),
            }),
            gpu: h.gpu,
            gpu_memory: h.gpu_memory,
            ram: h.ram,
            storage: h.storage,
            libraries: pairs(h.libraries),
            running: r
                .running
                .into_iter()
                .map(|entry| {
                    let kind = entry.key.kind().into();
                    let key = entry.key.clone();
                    let (id, name, version) = match entry.key {
                        ComponentKey::Model(m) => (None, Some(m.name), Some(m.version)),
                        ComponentKey::Transformation { id }
                        | ComponentKey::Service { id }
                        | ComponentKey::Inferencer { id } => (Some(id), None, None),
                    };
                    RunningComponent {
                        key,
                        kind,
                        id,
                        name,
                        version,
                        sha256: entry.sha256,
                    }
                })
                .collect(),
            health: DeviceHealth {
                requests: Long(r.health.requests),
                errors: Long(r.health.errors),
                p99_ms: r.health.p99_ms,
            },
        }
    }
}

pub async fn devices(
    ctx: &Context<'_>,
    filter: Option<DevicesFilter>,
    first: Option<i32>,
) -> async_graphql::Result<Vec<ReportedDevice>> {
    let service = ctx.data::<Arc<RepositoryService>>()?;
    let filter = filter.unwrap_or_default();
    let running = filter
        .running
        .as_ref()
        .map(RunningInput::key)
        .transpose()
        .gql()?;
    let reports = service
        .devices(DeviceFilter {
            hardware_class: filter.hardware_class,
            running,
            limit: first.map(|n| usize::try_from(n.max(0)).unwrap_or(0)),
        })
        .await
        .gql()?;
    Ok(reports.into_iter().map(ReportedDevice::from).collect())
}

pub async fn device(
    ctx: &Context<'_>,
    id: String,
) -> async_graphql::Result<Option<ReportedDevice>> {
    let service = ctx.data::<Arc<RepositoryService>>()?;
    Ok(service.device(&id).await.gql()?.map(ReportedDevice::from))
}
