//! GraphQL output types, converted from the domain in one place.

use std::collections::BTreeMap;

use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::DataLoader;
use async_graphql::{
    ComplexObject, Context, ID, InputValueError, InputValueResult, Json, Object, Scalar,
    ScalarType, SimpleObject, Union, Value,
};
use chrono::{DateTime, Utc};

use super::inputs::DeviceInput;
use super::loader::ModelLoader;
use crate::api::error::{GqlResultExt, graphql_error};
use crate::api::state::Links;
use crate::domain::{self, Component, ComponentKey, ModelKey, Spec};
use crate::service::{Listing, ServiceError};

/// A 64-bit unsigned integer (GraphQL's `Int` is 32-bit), serialised as a JSON number: exact in every JSON client
/// up to 2^53, far beyond any file this repository stores.
#[derive(serde::Serialize)]
#[serde(transparent)]
pub struct Long(pub u64);

#[Scalar(name = "Long")]
impl ScalarType for Long {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => n
                .as_u64()
                .map(Long)
                .ok_or_else(|| InputValueError::expected_type(value)),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// The binary object of a component.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct File {
    /// Size in bytes.
    pub size: Long,
    /// Lower-case hex sha256 of the bytes; also the download's ETag. Null only for a file inherited from the
    /// original service whose hash the MongoDB backend has not computed yet (it does so in the background at
    /// start-up).
    pub sha256: Option<String>,
    pub content_type: String,
    /// The filename given at upload, without directories.
    pub filename: String,
    pub uploaded_at: DateTime<Utc>,
    /// Where to download it: the REST route `GET /{kind}/{id}` (`/model/{name}/{version}` for models).
    pub download_url: String,
    #[graphql(skip)]
    pub stored: domain::StoredFile,
    #[graphql(skip)]
    pub key: ComponentKey,
}

impl File {
    fn new(f: domain::StoredFile, download_url: String, key: &ComponentKey) -> Self {
        File {
            size: Long(f.size),
            download_url,
            sha256: Some(f.sha256.clone()).filter(|sha| !sha.is_empty()),
            content_type: f.content_type.clone(),
            filename: f.filename.clone(),
            uploaded_at: f.uploaded_at,
            stored: f,
            key: key.clone(),
        }
    }
}

#[ComplexObject]
impl File {
    /// Signatures of these bytes (OpenSSF Model Signing bundles), each with whether this server's trust policy
    /// verifies it. A replaced file's signatures stay with the bytes they signed.
    async fn signatures(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Signature>> {
        let service = ctx.data::<std::sync::Arc<crate::service::RepositoryService>>()?;
        Ok(service
            .signing()
            .check(&self.key, &self.stored)
            .into_iter()
            .map(Signature::from)
            .collect())
    }
}

/// A signature of a file, and this server's verdict on it under its trust policy (`--trust-policy`).
#[derive(SimpleObject)]
pub struct Signature {
    /// The sha256 of the bundle.
    pub id: ID,
    /// Whether the trust policy verifies it: a key or certificate authority of a rule covering this component
    /// signed a statement naming exactly these bytes.
    pub verified: bool,
    /// Who signed: `sha256:<hex>` of a key, or a certificate's identity; null when not known.
    pub signer: Option<String>,
    /// Why it is not verified; null when it is.
    pub reason: Option<String>,
    pub added_at: DateTime<Utc>,
    /// The label of the token that attached it.
    pub added_by: String,
    /// The bundle exactly as it was attached (Sigstore bundle v0.3 JSON, as `model_signing` writes it).
    pub bundle: String,
}

impl From<crate::service::signing::CheckedSignature> for Signature {
    fn from(checked: crate::service::signing::CheckedSignature) -> Self {
        let (s, verdict) = (checked.signature, checked.verdict);
        Signature {
            id: ID(s.id),
            verified: verdict.verified,
            signer: verdict.signer,
            reason: verdict.reason,
            added_at: s.added_at,
            added_by: s.added_by,
            bundle: s.bundle,
        }
    }
}

/// The platform a variant is built for.
#[derive(SimpleObject, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformInfo {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    pub accelerator: Option<String>,
    /// PEP 440 requirement on the device's accelerator version.
    pub accelerator_version: Option<String>,
    /// The build's label (`4bit`, `fp16`), when the platform holds several.
    pub precision: Option<String>,
}

impl From<&domain::Platform> for PlatformInfo {
    fn from(p: &domain::Platform) -> Self {
        Self {
            os: p.os.clone(),
            arch: p.arch.clone(),
            variant: p.variant.clone(),
            accelerator: p.accelerator.clone(),
            accelerator_version: p.accelerator_version.clone(),
            precision: p.precision.clone(),
        }
    }
}

/// The needs a per-platform build states for itself; each figure set replaces its component's.
#[derive(SimpleObject, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileNeeds {
    /// Storage in GB.
    pub storage: Option<f64>,
    /// RAM in GB.
    pub ram: Option<f64>,
    /// GPU memory in GB.
    pub gpu_memory: Option<f64>,
    /// Whether this build needs a GPU (null: as its component).
    pub gpu: Option<bool>,
}

impl From<&domain::FileNeeds> for FileNeeds {
    fn from(n: &domain::FileNeeds) -> Self {
        Self {
            storage: n.storage,
            ram: n.ram,
            gpu_memory: n.gpu_memory,
            gpu: n.gpu,
        }
    }
}

/// A file of a component for one platform; its `downloadUrl` is the content-addressed `/blobs/sha256/{hex}`, with
/// `?filename=` so that it saves under its own name.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct FileVariant {
    pub platform: PlatformInfo,
    /// What this build needs instead of its component's needs; null when it states none.
    pub needs: Option<FileNeeds>,
    pub file: File,
}

#[ComplexObject]
impl FileVariant {
    /// The signatures of this platform's file (the same as `file.signatures`).
    async fn signatures(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Signature>> {
        self.file.signatures(ctx).await
    }
}

/// What `fileFor` chooses from: the default file and the variants.
#[derive(Clone)]
pub struct Files {
    /// The whole component, for what is worked out from several of its parts (`unmetNeeds`).
    component: std::sync::Arc<Component>,
    key: ComponentKey,
    download_url: String,
    variants: Vec<domain::Variant>,
}

impl Files {
    fn variants(&self, links: &Links) -> Vec<FileVariant> {
        self.variants
            .iter()
            .map(|v| FileVariant {
                platform: PlatformInfo::from(&v.platform),
                needs: v.needs.as_ref().map(FileNeeds::from),
                file: File::new(
                    v.file.clone(),
                    links.named_blob_url(&v.file.sha256, &v.file.filename),
                    &self.key,
                ),
            })
            .collect()
    }

    fn file_for(
        &self,
        ctx: &Context<'_>,
        device: DeviceInput,
    ) -> async_graphql::Result<Option<File>> {
        let device = domain::Device::try_from(device).gql()?;
        device.validate().gql()?;
        let links = ctx.data::<Links>()?;
        Ok(device.choose(&self.component).ok().map(|chosen| {
            let file = chosen.file.clone();
            match chosen.variant {
                Some(_) => {
                    let url = links.named_blob_url(&file.sha256, &file.filename);
                    File::new(file, url, &self.key)
                }
                None => File::new(file, self.download_url.clone(), &self.key),
            }
        }))
    }
}

/// A need a device does not meet.
#[derive(SimpleObject)]
pub struct UnmetNeed {
    /// `gpu`, `ram`, `gpuMemory`, `storage`, `library <name>`, `model <name>`, `platform` or `file`.
    pub need: String,
    /// What the component needs, such as `8 GB` or `torch >=2.4`.
    pub wanted: String,
    /// What the device has, such as `4 GB`, `torch 2.3.0` or `no torch`.
    pub has: String,
}

/// `variants` and `fileFor` of every kind.
macro_rules! per_platform_files {
    ($type:ident) => {
        #[ComplexObject]
        impl $type {
            /// Files for particular platforms, besides the platform-neutral default `file`.
            async fn variants(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<FileVariant>> {
                Ok(self.files.variants(ctx.data::<Links>()?))
            }

            /// The file `device` gets: of the builds that run on its platform and fit its RAM, GPU memory, GPU and
            /// storage, an accelerated build first, a per-platform build before the default file, then the most
            /// demanding (GPU memory, then RAM), then the newest platform variant; null when none fits
            /// (`unmetNeeds` says why). Takes the same `DeviceInput` as `runnableOn`.
            async fn file_for(
                &self,
                ctx: &Context<'_>,
                device: DeviceInput,
            ) -> async_graphql::Result<Option<File>> {
                self.files.file_for(ctx, device)
            }

            /// Why `device` cannot run this component: each need it does not meet, with what the component
            /// wants and what the device has, as `runnableOn` matches them. Empty when it can (always, for
            /// models: they run where their inferencer runs).
            async fn unmet_needs(
                &self,
                device: DeviceInput,
            ) -> async_graphql::Result<Vec<UnmetNeed>> {
                let device = domain::Device::try_from(device).gql()?;
                device.validate().gql()?;
                Ok(device
                    .unmet(&self.files.component)
                    .into_iter()
                    .map(|u| UnmetNeed {
                        need: u.need,
                        wanted: u.wanted,
                        has: u.has,
                    })
                    .collect())
            }
        }
    };
}

per_platform_files!(Model);
per_platform_files!(Transformation);
per_platform_files!(Service);
per_platform_files!(Inferencer);

/// A library and the version a component needs (a PEP 440 version or range; empty or `*` for any).
#[derive(SimpleObject)]
pub struct Library {
    pub name: String,
    pub version: String,
}

/// A model that must be present where a component runs.
pub struct ModelRequirement {
    key: ModelKey,
}

#[Object]
impl ModelRequirement {
    async fn name(&self) -> &str {
        &self.key.name
    }

    async fn version(&self) -> &str {
        &self.key.version
    }

    /// The model as stored in this repository, or null when it is not (yet) here. Batched per request.
    async fn model(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Model>> {
        let loader = ctx.data::<DataLoader<ModelLoader>>()?;
        let links = ctx.data::<Links>()?;
        let found = loader
            .load_one(self.key.clone())
            .await
            .map_err(|e| graphql_error(&e))?;
        found
            .map(|c| Model::from_node(Node::new(c, links)))
            .transpose()
    }
}

/// What a component needs from the device that runs it.
#[derive(SimpleObject)]
pub struct Needs {
    /// Extra storage in GB.
    pub storage: Option<f64>,
    /// RAM in GB.
    pub ram: Option<f64>,
    pub gpu: bool,
    /// GPU memory in GB.
    pub gpu_memory: Option<f64>,
    pub preinstalled_libraries: Vec<Library>,
    pub available_models: Vec<ModelRequirement>,
}

impl From<domain::Needs> for Needs {
    fn from(n: domain::Needs) -> Self {
        Self {
            storage: n.storage,
            ram: n.ram,
            gpu: n.gpu,
            gpu_memory: n.gpu_memory,
            preinstalled_libraries: n
                .preinstalled_libraries
                .into_iter()
                .map(|(name, version)| Library { name, version })
                .collect(),
            available_models: n
                .available_models
                .into_iter()
                .map(|(name, version)| ModelRequirement {
                    key: ModelKey { name, version },
                })
                .collect(),
        }
    }
}

/// A trained model, keyed by name and version.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Model {
    #[graphql(skip)]
    pub files: Files,
    pub name: String,
    pub version: String,
    /// The library the model was saved with and is loaded by (e.g. `keras`, `torch`).
    pub library: String,
    pub description: String,
    /// Null until a file is uploaded.
    pub file: Option<File>,
    /// The aliases (such as `production`) that point at this version.
    pub aliases: Vec<String>,
    /// Locked for good: the file cannot be replaced, nor the component deleted once it has one.
    pub locked: bool,
    /// Changes with every write of the component. Pass it back as `expectedRevision` of an update, upload or lock
    /// (or as REST `If-Match`) to write only if nobody wrote in between; a stale one answers `CONFLICT` with
    /// `extensions.currentRevision`.
    pub revision: Long,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One move of a model alias.
#[derive(SimpleObject)]
pub struct AliasMove {
    /// The version the alias pointed at before; null when the alias was new.
    pub from: Option<String>,
    /// The version it points at since; null when the alias was deleted.
    pub to: Option<String>,
    pub at: DateTime<Utc>,
    /// The label of the token that moved it (`anonymous` on a server without tokens; `rollout <id>` for a
    /// rollout's move).
    pub by: String,
    /// How a rollout of the alias ended, on the entry its end left (where the alias points since: `from` equals
    /// `to` when it stayed); null for other moves.
    pub rollout: Option<RolloutOutcome>,
}

/// A rollout's end as an alias's history records it.
#[derive(SimpleObject)]
pub struct RolloutOutcome {
    pub id: ID,
    /// `COMPLETED`, `REVERTED` or `ABORTED`.
    pub state: super::rollouts::RolloutState,
    /// The version it rolled out.
    pub version: String,
    /// The hardware classes that completed (their devices run `version`), and those that reverted.
    pub completed: Vec<String>,
    pub reverted: Vec<String>,
}

impl From<domain::AliasMove> for AliasMove {
    fn from(m: domain::AliasMove) -> Self {
        Self {
            from: m.from,
            to: m.to,
            at: m.at,
            by: m.by,
            rollout: m.rollout.map(|r| RolloutOutcome {
                id: ID(r.id),
                state: r.state.into(),
                version: r.version,
                completed: r.completed,
                reverted: r.reverted,
            }),
        }
    }
}

/// A pre- or post-processing step of a pipeline.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Transformation {
    #[graphql(skip)]
    pub files: Files,
    pub id: ID,
    pub description: String,
    /// Parameter name -> type name.
    pub parameter_types: Json<BTreeMap<String, String>>,
    /// Parameter name -> default value (any JSON).
    pub default_values: Json<serde_json::Map<String, serde_json::Value>>,
    pub outputs: Vec<String>,
    pub needs: Needs,
    pub file: Option<File>,
    /// Locked for good: the file cannot be replaced, nor the component deleted once it has one.
    pub locked: bool,
    /// Changes with every write of the component. Pass it back as `expectedRevision` of an update, upload or lock
    /// (or as REST `If-Match`) to write only if nobody wrote in between; a stale one answers `CONFLICT` with
    /// `extensions.currentRevision`.
    pub revision: Long,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A gRPC servicer that exposes a pipeline.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Service {
    #[graphql(skip)]
    pub files: Files,
    pub id: ID,
    pub description: String,
    pub needs: Needs,
    pub file: Option<File>,
    /// Locked for good: the file cannot be replaced, nor the component deleted once it has one.
    pub locked: bool,
    /// Changes with every write of the component. Pass it back as `expectedRevision` of an update, upload or lock
    /// (or as REST `If-Match`) to write only if nobody wrote in between; a stale one answers `CONFLICT` with
    /// `extensions.currentRevision`.
    pub revision: Long,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Code that loads and runs models of one library.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Inferencer {
    #[graphql(skip)]
    pub files: Files,
    pub id: ID,
    pub description: String,
    pub library: String,
    pub use_cuda: bool,
    pub needs: Needs,
    pub file: Option<File>,
    /// Locked for good: the file cannot be replaced, nor the component deleted once it has one.
    pub locked: bool,
    /// Changes with every write of the component. Pass it back as `expectedRevision` of an update, upload or lock
    /// (or as REST `If-Match`) to write only if nobody wrote in between; a stale one answers `CONFLICT` with
    /// `extensions.currentRevision`.
    pub revision: Long,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Any stored component.
#[derive(Union)]
#[graphql(name = "Component")]
pub enum Node {
    Model(Model),
    Transformation(Transformation),
    Service(Service),
    Inferencer(Inferencer),
}

impl Node {
    pub fn new(c: Component, links: &Links) -> Self {
        let files = Files {
            component: std::sync::Arc::new(c.clone()),
            key: c.key.clone(),
            download_url: links.download_url(&c.key),
            variants: c.variants,
        };
        let file = c
            .file
            .map(|f| File::new(f, files.download_url.clone(), &c.key));
        let (created_at, updated_at, locked, revision) =
            (c.created_at, c.updated_at, c.locked, Long(c.revision));
        let aliases: Vec<String> = c.aliases.into_iter().collect();
        let id = match &c.key {
            ComponentKey::Model(_) => ID::default(),
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => ID(id.clone()),
        };
        match (c.key, c.spec) {
            (ComponentKey::Model(key), Spec::Model(spec)) => Node::Model(Model {
                name: key.name,
                version: key.version,
                library: spec.library,
                description: spec.description,
                files: files.clone(),
                file,
                aliases,
                locked,
                revision,
                created_at,
                updated_at,
            }),
            (_, Spec::Transformation(spec)) => Node::Transformation(Transformation {
                id,
                description: spec.description,
                parameter_types: Json(spec.parameter_types),
                default_values: Json(spec.default_values),
                outputs: spec.outputs,
                needs: spec.needs.into(),
                files: files.clone(),
                file,
                locked,
                revision,
                created_at,
                updated_at,
            }),
            (_, Spec::Service(spec)) => Node::Service(Service {
                id,
                description: spec.description,
                needs: spec.needs.into(),
                files: files.clone(),
                file,
                locked,
                revision,
                created_at,
                updated_at,
            }),
            (_, Spec::Inferencer(spec)) => Node::Inferencer(Inferencer {
                id,
                description: spec.description,
                library: spec.library,
                use_cuda: spec.use_cuda,
                needs: spec.needs.into(),
                files: files.clone(),
                file,
                locked,
                revision,
                created_at,
                updated_at,
            }),
            (key, Spec::Model(_)) => Node::Model(Model {
                // Unreachable through the service, which checks that key and spec agree; kept total, not panicking.
                name: key.to_string(),
                version: String::new(),
                library: String::new(),
                description: String::new(),
                files,
                file,
                aliases: Vec::new(),
                locked,
                revision,
                created_at,
                updated_at,
            }),
        }
    }
}

/// Picks the expected kind out of a [`Node`].
pub trait FromNode: Sized {
    fn from_node(node: Node) -> async_graphql::Result<Self>;
}

impl FromNode for Node {
    fn from_node(node: Node) -> async_graphql::Result<Self> {
        Ok(node)
    }
}

macro_rules! node_variant {
    ($variant:ident) => {
        impl FromNode for $variant {
            fn from_node(node: Node) -> async_graphql::Result<Self> {
                match node {
                    Node::$variant(inner) => Ok(inner),
                    _ => Err(graphql_error(&ServiceError::internal(concat!(
                        "a stored record is not a ",
                        stringify!($variant)
                    )))),
                }
            }
        }
    };
}

node_variant!(Model);
node_variant!(Transformation);
node_variant!(Service);
node_variant!(Inferencer);

/// Extra field of every connection.
#[derive(SimpleObject)]
pub struct TotalCount {
    /// How many components match the filter in all, across every page.
    pub total_count: u64,
}

pub type Page<T> = Connection<String, T, TotalCount>;

/// Turns a listing into a Relay connection of `T`.
pub fn page<T>(
    listing: Result<Listing, ServiceError>,
    after: Option<&str>,
    links: &Links,
) -> async_graphql::Result<Page<T>>
where
    T: FromNode + async_graphql::OutputType,
{
    let listing = listing.gql()?;
    let mut connection = Connection::with_additional_fields(
        after.is_some(),
        listing.has_next,
        TotalCount {
            // Computed only when the query selects it, so an unselected count is never read.
            total_count: listing.total.unwrap_or_default(),
        },
    );
    for (cursor, component) in listing.items {
        connection.edges.push(Edge::new(
            cursor,
            T::from_node(Node::new(component, links))?,
        ));
    }
    Ok(connection)
}
