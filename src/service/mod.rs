//! The use cases, shared by every transport (GraphQL, REST). Transports never reach a store directly.

pub mod archive;
mod cursor;
pub mod devices;
mod error;
mod events;
mod feed_hub;
mod feed_relay;
mod feed_waiters;
pub mod mirror;
mod oci;
mod pipelines;
pub mod rollouts;
pub mod signing;
pub mod uploads;
pub mod webhooks;

use std::ops::Range;
use std::sync::Arc;

pub use self::error::ServiceError;
// What transports hand to the use cases and get back, named here so that `api` needs no `store`.
pub use self::events::{EventPage, EventStream, FeedEvent, MAX_EVENT_PAGE, SharedEventStream};
use crate::domain::{
    AliasMove, Component, ComponentFilter, ComponentKey, Device, FileNeeds, FilePolicy, Kind,
    ModelKey, NeedsFilter, Platform, Sha256, Spec, StoredFile, validate_alias,
    validate_new_version,
};
pub use crate::store::StagedBlob;
pub use crate::store::uploads::UploadSession;
use crate::store::{
    ByteStream, ComponentStream, FileMeta, PageRequest, SpecUpdate, Store, UploadStream,
};

/// Page size when a client does not ask for one.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page a client may ask for: bounds the work and the response of one request.
pub const MAX_PAGE_SIZE: usize = 100;
/// Longest accepted text search.
const MAX_SEARCH_BYTES: usize = 256;
/// Longest accepted filename and content type of an upload.
const MAX_FILE_LABEL_BYTES: usize = 255;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// One page of a listing, each item with the cursor that points at it.
#[derive(Debug)]
pub struct Listing {
    pub items: Vec<(String, Component)>,
    pub has_next: bool,
    /// How many match in all; only when the caller asked for a count.
    pub total: Option<u64>,
}

pub struct RepositoryService {
    store: Arc<dyn Store>,
    max_upload_bytes: u64,
    webhook_config: webhooks::WebhookConfig,
    delivery_counts: webhooks::DeliveryCounts,
    /// Held from counting the webhooks to inserting one, so this server's creations never pass the cap.
    webhook_creation: tokio::sync::Mutex<()>,
    immutable_files: bool,
    upload_session_ttl: std::time::Duration,
    /// Most unfinished upload sessions per token; creations of one server wait for each other to count them.
    max_upload_sessions: usize,
    /// Most bytes a token's unfinished upload sessions may announce together; `None` for no limit but the count's.
    max_upload_session_bytes: Option<u64>,
    creating_upload: tokio::sync::Mutex<()>,
    /// Set on an edge mirror: its status, and writes through the API are refused.
    mirror: Option<mirror::MirrorStatus>,
    /// The one reader of the change feed that live followers share.
    feed_hub: feed_hub::FeedHub,
    /// The trust policy and what the server does with signatures.
    signing: Arc<signing::Signing>,
    /// How long a device report keeps its device live (`--device-report-ttl`).
    device_report_ttl: std::time::Duration,
    /// When open rollouts last read the fleet's reports.
    rollout_refresh: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RepositoryService {
    pub fn new(store: Arc<dyn Store>, max_upload_bytes: u64) -> Self {
        Self {
            store,
            max_upload_bytes,
            webhook_config: webhooks::WebhookConfig::default(),
            delivery_counts: webhooks::DeliveryCounts::default(),
            webhook_creation: tokio::sync::Mutex::new(()),
            immutable_files: false,
            upload_session_ttl: uploads::DEFAULT_SESSION_TTL,
            max_upload_sessions: uploads::DEFAULT_MAX_SESSIONS,
            max_upload_session_bytes: None,
            creating_upload: tokio::sync::Mutex::new(()),
            mirror: None,
            feed_hub: feed_hub::FeedHub::default(),
            signing: Arc::default(),
            device_report_ttl: devices::DEFAULT_REPORT_TTL,
            rollout_refresh: std::sync::Mutex::new(None),
        }
    }

    /// Sets how long a device report keeps its device live.
    pub fn with_device_report_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.device_report_ttl = ttl;
        self
    }

    /// Sets the trust policy and the signature mode.
    pub fn with_signing(mut self, signing: Arc<signing::Signing>) -> Self {
        self.signing = signing;
        self
    }

    pub fn signing(&self) -> &signing::Signing {
        &self.signing
    }

    /// Makes this the service of an edge mirror: read-only, with the sync's status.
    pub fn with_mirror(mut self, status: mirror::MirrorStatus) -> Self {
        self.mirror = Some(status);
        self
    }

    /// The edge mirror's status; `None` when this server is not a mirror.
    pub fn mirror_status(&self) -> Option<&mirror::MirrorStatus> {
        self.mirror.as_ref()
    }

    /// Refuses a write on an edge mirror.
    fn writable(&self) -> Result<(), ServiceError> {
        match &self.mirror {
            Some(status) => Err(ServiceError::ReadOnlyMirror(format!(
                "this server is a read-only mirror of {}: write to the upstream",
                status.snapshot().upstream
            ))),
            None => Ok(()),
        }
    }

    /// Sets how webhooks are sent.
    pub fn with_webhooks(mut self, config: webhooks::WebhookConfig) -> Self {
        self.webhook_config = config;
        self
    }

    /// With `true`, files cannot be replaced and components with a file cannot be deleted.
    pub fn with_immutable_files(mut self, immutable_files: bool) -> Self {
        self.immutable_files = immutable_files;
        self
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    pub async fn ready(&self) -> Result<(), ServiceError> {
        self.store.ping().await.map_err(ServiceError::from)?;
        match &self.mirror {
            Some(status) if !status.ready() => Err(ServiceError::Unavailable(
                crate::store::StoreError::Unavailable(
                    "the mirror's first sync with its upstream is not complete".into(),
                ),
            )),
            _ => Ok(()),
        }
    }

    pub async fn create(&self, key: ComponentKey, spec: Spec) -> Result<Component, ServiceError> {
        self.writable()?;
        if let ComponentKey::Model(model) = &key {
            validate_new_version(&model.version)?;
        }
        let component = Component::new(key, spec, crate::domain::now())?;
        self.store.components().insert(component.clone()).await?;
        Ok(component)
    }

    pub async fn find(&self, key: &ComponentKey) -> Result<Option<Component>, ServiceError> {
        Ok(self.store.components().get(key).await?)
    }

    pub async fn get(&self, key: &ComponentKey) -> Result<Component, ServiceError> {
        self.find(key)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{key} not found")))
    }

    /// The models behind many references, in one store round trip.
    pub async fn models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, ServiceError> {
        Ok(self.store.components().get_models(keys).await?)
    }

    pub async fn list(
        &self,
        kind: Kind,
        filter: ComponentFilter,
        first: Option<i32>,
        after: Option<&str>,
        count: bool,
    ) -> Result<Listing, ServiceError> {
        check_filter(kind, &filter)?;
        let limit = page_size(first)?;
        let after = after
            .map(|cursor| cursor::decode(cursor, &[kind]))
            .transpose()?
            .map(|(_, sort_key)| sort_key);
        let page = self
            .store
            .components()
            .list(
                kind,
                &filter,
                PageRequest {
                    after,
                    limit,
                    count,
                },
            )
            .await?;
        Ok(Listing {
            items: page
                .items
                .into_iter()
                .map(|c| (cursor::encode(&c.key), c))
                .collect(),
            has_next: page.has_next,
            total: page.total,
        })
    }

    /// Every transformation, service and inferencer (or those of `kinds`) whose needs `device` satisfies, in one
    /// listing ordered by kind, then key.
    pub async fn runnable_on(
        &self,
        device: Device,
        kinds: Option<Vec<Kind>>,
        first: Option<i32>,
        after: Option<&str>,
        count: bool,
    ) -> Result<Listing, ServiceError> {
        let mut kinds = kinds.unwrap_or_else(|| Kind::WITH_NEEDS.to_vec());
        if kinds.contains(&Kind::Model) {
            return Err(ServiceError::InvalidInput(
                "kinds: models have no needs; runnableOn lists transformations, services and inferencers".into(),
            ));
        }
        kinds.sort();
        kinds.dedup();
        let filter = ComponentFilter {
            needs: NeedsFilter {
                runnable_on: Some(device),
                ..NeedsFilter::default()
            },
            ..ComponentFilter::default()
        };
        check_filter(Kind::Service, &filter)?;
        let limit = page_size(first)?;
        let cursor = after.map(|c| cursor::decode(c, &kinds)).transpose()?;
        let mut listing = Listing {
            items: Vec::new(),
            has_next: false,
            total: count.then_some(0),
        };
        for kind in kinds {
            // Kinds before the cursor's only count towards the total; the cursor's kind resumes after its key.
            let (after, limit) = match &cursor {
                Some((cursor_kind, _)) if kind < *cursor_kind => (None, 0),
                Some((cursor_kind, key)) if kind == *cursor_kind => {
                    (Some(key.clone()), limit - listing.items.len())
                }
                _ => (None, limit - listing.items.len()),
            };
            let before_cursor = cursor.as_ref().is_some_and(|(k, _)| kind < *k);
            let page_done = listing.items.len() == limit && listing.has_next;
            if !count && (before_cursor || page_done) {
                continue;
            }
            let page = self
                .store
                .components()
                .list(
                    kind,
                    &filter,
                    PageRequest {
                        after,
                        limit,
                        count,
                    },
                )
                .await?;
            if let (Some(total), Some(more)) = (listing.total.as_mut(), page.total) {
                *total += more;
            }
            if !before_cursor {
                listing.has_next |= page.has_next;
                listing
                    .items
                    .extend(page.items.into_iter().map(|c| (cursor::encode(&c.key), c)));
            }
        }
        Ok(listing)
    }

    /// Every component of `kind` in listing order, read in one pass.
    pub async fn list_all(&self, kind: Kind) -> Result<ComponentStream, ServiceError> {
        Ok(self.store.components().scan(kind).await?)
    }

    /// Applies `update`; with `expected`, only if the component is still at that revision.
    pub async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
        expected: Option<u64>,
    ) -> Result<Component, ServiceError> {
        self.writable()?;
        Ok(self
            .store
            .components()
            .update(key, update, expected)
            .await?)
    }

    pub async fn delete(&self, key: &ComponentKey) -> Result<Component, ServiceError> {
        self.writable()?;
        self.store
            .components()
            .delete(key, FilePolicy::immutable(self.immutable_files))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("{key} not found")))
    }

    /// Streams an upload into staging with the configured size limit. The result is attached with
    /// [`RepositoryService::attach_file`] or discarded by dropping it.
    pub async fn stage_upload(&self, body: UploadStream<'_>) -> Result<StagedBlob, ServiceError> {
        self.writable()?;
        Ok(self
            .store
            .blobs()
            .stage(body, self.max_upload_bytes)
            .await?)
    }

    /// Like [`RepositoryService::stage_upload`], for one more file of a request that already staged `already` bytes:
    /// the size limit holds for all files of a request together.
    pub async fn stage_another_upload(
        &self,
        body: UploadStream<'_>,
        already: u64,
    ) -> Result<StagedBlob, ServiceError> {
        self.writable()?;
        let left = self.max_upload_bytes.saturating_sub(already);
        match self.store.blobs().stage(body, left).await {
            Ok(blob) => Ok(blob),
            Err(crate::store::StoreError::TooLarge { .. }) => Err(ServiceError::PayloadTooLarge {
                limit: self.max_upload_bytes,
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn attach_file(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        filename: Option<&str>,
        content_type: Option<&str>,
        target: FileTarget,
        expected: Option<u64>,
    ) -> Result<Component, ServiceError> {
        self.writable()?;
        let FileTarget { platform, needs } = target;
        let needs = build_needs(platform.as_ref(), needs)?;
        let meta = FileMeta {
            platform,
            needs,
            expected_revision: expected,
            filename: clean_filename(filename).unwrap_or_else(|| default_filename(key)),
            content_type: clean_content_type(content_type),
            policy: FilePolicy::immutable(self.immutable_files),
        };
        Ok(self.store.components().attach(key, staged, meta).await?)
    }

    /// Locks a component for good: its file stays as it is and the component stays once it has one.
    pub async fn lock(
        &self,
        key: &ComponentKey,
        expected: Option<u64>,
    ) -> Result<Component, ServiceError> {
        self.writable()?;
        Ok(self.store.components().lock(key, expected).await?)
    }

    /// Attaches a signature (a bundle as `model_signing` writes it) to the default file of a component, or to its
    /// variant for `platform`. Answers the component after, the signature with its verdict, and whether it is new
    /// (the same bundle again changes nothing).
    pub async fn add_signature(
        &self,
        key: &ComponentKey,
        platform: Option<Platform>,
        bundle: &str,
        by: &str,
    ) -> Result<(Component, signing::CheckedSignature, bool), ServiceError> {
        use crate::domain::signing::{Bundle, BundleError};
        self.writable()?;
        let bundle = Bundle::parse(bundle).map_err(|e| match e {
            BundleError::TooLarge(_) => ServiceError::BodyTooLarge(e.to_string()),
            e => ServiceError::InvalidInput(format!("bundle: {e}")),
        })?;
        let id = crate::domain::signing::Signature::new(&bundle, by, crate::domain::now()).id;
        let added = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let decide: crate::store::Decide = {
            let (added, by, platform) = (added.clone(), by.to_string(), platform.clone());
            let (signing, key) = (self.signing.clone(), key.clone());
            Box::new(move |component| {
                let verifies =
                    |file: &StoredFile, signature: &crate::domain::signing::Signature| {
                        signing.verifies(&key, file, signature)
                    };
                let decided = component.add_signature(
                    platform.as_ref(),
                    &bundle,
                    &by,
                    crate::domain::now(),
                    &verifies,
                )?;
                added.store(decided.is_some(), std::sync::atomic::Ordering::Relaxed);
                Ok(decided)
            })
        };
        let component = self
            .store
            .components()
            .change(key, crate::domain::EventType::SignatureAdded, decide)
            .await?;
        let file = signed_file(&component, platform.as_ref())?;
        let checked = self
            .signing
            .check(&component.key, file)
            .into_iter()
            .find(|c| c.signature.id == id)
            .ok_or_else(|| {
                ServiceError::internal("the signature just attached is not on the file")
            })?;
        let added = added.load(std::sync::atomic::Ordering::Relaxed);
        Ok((component, checked, added))
    }

    /// The signatures of a component's default file, or of its variant for `platform`, with their verdicts.
    pub async fn signatures(
        &self,
        key: &ComponentKey,
        platform: Option<&Platform>,
    ) -> Result<(StoredFile, Vec<signing::CheckedSignature>), ServiceError> {
        let component = self.get(key).await?;
        let file = signed_file(&component, platform)?;
        Ok((file.clone(), self.signing.check(&component.key, file)))
    }

    /// Points `alias` of model `name` at `version`; `by` is the label of the caller's token. With `expected`, only
    /// if `version` is still at that revision.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
        by: &str,
        expected: Option<u64>,
    ) -> Result<Component, ServiceError> {
        self.writable()?;
        validate_alias(alias)?;
        let key = ComponentKey::model(name, version)?;
        self.check_no_rollout(name, alias).await?;
        self.check_alias_target(&key, alias).await?;
        self.store
            .aliases()
            .move_alias(name, alias, Some(version), by, expected)
            .await?;
        self.get(&key).await
    }

    /// Whether `alias` may name `key`: under `--signatures enforce`, only a version whose every file is verified.
    async fn check_alias_target(
        &self,
        key: &ComponentKey,
        alias: &str,
    ) -> Result<(), ServiceError> {
        let target = self.get(key).await?;
        if self.signing.mode() != signing::SignatureMode::Enforce {
            return Ok(());
        }
        if target.files().next().is_none() {
            return Err(ServiceError::UnsignedVersion(format!(
                "alias {alias} cannot move to {key}: it has no file yet, so no signature vouches for what \
                 devices would get"
            )));
        }
        if let Some(file) = target
            .files()
            .find(|file| !self.signing.verified(key, file))
        {
            return Err(ServiceError::UnsignedVersion(format!(
                "alias {alias} cannot move to {}: devices would be refused it",
                signing::unsigned_message(key, file)
            )));
        }
        Ok(())
    }

    /// Removes `alias` of model `name`; [`ServiceError::NotFound`] when there is no such alias.
    pub async fn delete_alias(
        &self,
        name: &str,
        alias: &str,
        by: &str,
        expected: Option<u64>,
    ) -> Result<(), ServiceError> {
        self.writable()?;
        validate_alias(alias)?;
        self.check_no_rollout(name, alias).await?;
        match self
            .store
            .aliases()
            .move_alias(name, alias, None, by, expected)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound(format!(
                "model {name} has no alias {alias}"
            ))),
        }
    }

    /// The version `alias` of model `name` points at.
    pub async fn resolve_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ComponentKey, ServiceError> {
        validate_alias(alias)?;
        let version = self
            .store
            .aliases()
            .resolve_alias(name, alias)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("model {name} has no alias {alias}")))?;
        Ok(ComponentKey::model(name, version)?)
    }

    /// Every move of an alias, oldest first.
    pub async fn alias_history(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Vec<AliasMove>, ServiceError> {
        validate_alias(alias)?;
        Ok(self.store.aliases().alias_history(name, alias).await?)
    }

    /// The file of a component for a device: the best build that runs on its platform and fits its means (see
    /// [`Device::choose`]); none fitting is a 404 that says why.
    pub async fn file_for(
        &self,
        key: &ComponentKey,
        device: &Device,
    ) -> Result<StoredFile, ServiceError> {
        device.validate()?;
        let component = self.get(key).await?;
        match device.choose(&component) {
            Ok(chosen) => Ok(chosen.file.clone()),
            Err(unmet) => {
                let why: Vec<String> = unmet
                    .iter()
                    .map(|u| match u.code {
                        crate::domain::NeedCode::NoFile => u.has.clone(),
                        _ => format!(
                            "{}: it wants {}, the device has {}",
                            u.need, u.wanted, u.has
                        ),
                    })
                    .collect();
                Err(ServiceError::NotFound(format!(
                    "{key} has no file for this device: {}",
                    why.join("; ")
                )))
            }
        }
    }

    /// The component and its file, for a download.
    pub async fn file(&self, key: &ComponentKey) -> Result<StoredFile, ServiceError> {
        self.get(key)
            .await?
            .file
            .ok_or_else(|| ServiceError::NotFound(format!("{key} has no file yet")))
    }

    /// The stored bytes with this sha256, for a download by digest.
    pub async fn blob(&self, sha256: &Sha256) -> Result<StoredFile, ServiceError> {
        self.store.blobs().blob(sha256).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no stored file has the sha256 {sha256}"))
        })
    }

    /// Whether a download of `file` may go out: in enforce mode only a file with a verified signature does; in
    /// audit mode one without is counted. By digest, the bytes go out only when every component holding them has
    /// a verified signature for them: a signature trusted for one component never unlocks another's copy (this
    /// reads the catalogue: enforce and audit mode cost one scan per download by digest).
    pub async fn admit_download(
        &self,
        key: Option<&ComponentKey>,
        file: &StoredFile,
    ) -> Result<(), ServiceError> {
        if self.signing.mode() == signing::SignatureMode::Off {
            return Ok(());
        }
        match key {
            Some(key) => self
                .signing
                .admit_download(key, file)
                .map_err(ServiceError::Unsigned),
            None => {
                let holders = self.holders(&file.sha256).await?;
                let unverified = holders
                    .iter()
                    .find(|(key, held)| !self.signing.verified(key, held));
                match unverified.or(holders.first()) {
                    Some((key, held)) => self
                        .signing
                        .admit_download(key, held)
                        .map_err(ServiceError::Unsigned),
                    // Bytes no component holds (an OCI config, a pushed blob awaiting its manifest).
                    None => Ok(()),
                }
            }
        }
    }

    /// The components with a file of these bytes, each with that file (a component holding them twice, twice).
    async fn holders(&self, sha256: &str) -> Result<Vec<(ComponentKey, StoredFile)>, ServiceError> {
        use futures_util::StreamExt as _;
        let mut found = Vec::new();
        for kind in Kind::ALL {
            let mut components = self.store.components().scan(kind).await?;
            while let Some(component) = components.next().await {
                let component = component?;
                for file in component.files().filter(|f| f.sha256 == sha256) {
                    found.push((component.key.clone(), file.clone()));
                }
            }
        }
        Ok(found)
    }

    pub async fn read_blob(
        &self,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<ByteStream, ServiceError> {
        self.store
            .blobs()
            .read_blob(file, range)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("sha256 {} is no longer stored", file.sha256))
            })
    }

    pub async fn read(
        &self,
        key: &ComponentKey,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<ByteStream, ServiceError> {
        Ok(self.store.blobs().read(key, file, range).await?)
    }
}

/// Which file of a component an upload is: the default one (`platform` `None`) or that platform's build, with the
/// needs that build states for itself.
#[derive(Debug, Clone, Default)]
pub struct FileTarget {
    pub platform: Option<Platform>,
    pub needs: Option<FileNeeds>,
}

/// The needs an upload states for its build: only a per-platform file has needs of its own, and all-empty needs are
/// none.
pub(crate) fn build_needs(
    platform: Option<&Platform>,
    needs: Option<FileNeeds>,
) -> Result<Option<FileNeeds>, ServiceError> {
    let Some(needs) = needs.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if platform.is_none() {
        return Err(ServiceError::InvalidInput(
            "needs: only a per-platform file states needs of its own (give a platform); the default file's needs \
             are the component's"
                .into(),
        ));
    }
    needs.validate()?;
    Ok(Some(needs.normalised()))
}

/// The file a signature is for: the default one, or the variant of `platform`.
fn signed_file<'c>(
    component: &'c Component,
    platform: Option<&Platform>,
) -> Result<&'c StoredFile, ServiceError> {
    component.file_of(platform).ok_or_else(|| {
        ServiceError::NotFound(match platform {
            None => format!("{} has no file", component.key),
            Some(platform) => format!("{} has no file for the platform {platform}", component.key),
        })
    })
}

fn page_size(first: Option<i32>) -> Result<usize, ServiceError> {
    match first {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (0..=MAX_PAGE_SIZE as i32).contains(&n) => Ok(n as usize),
        Some(n) => Err(ServiceError::InvalidInput(format!(
            "first: must be between 0 and {MAX_PAGE_SIZE}, got {n}"
        ))),
    }
}

/// Refuses filters that cannot apply to a kind, and nonsensical figures.
fn check_filter(kind: Kind, filter: &ComponentFilter) -> Result<(), ServiceError> {
    let invalid = |msg: &str| Err(ServiceError::InvalidInput(msg.to_owned()));
    if filter
        .search
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SEARCH_BYTES)
    {
        return invalid(&format!(
            "filter.search: must be at most {MAX_SEARCH_BYTES} bytes long"
        ));
    }
    if filter.name.is_some() && kind != Kind::Model {
        return invalid("filter.name: only models are filtered by name");
    }
    if filter.library.is_some() && !matches!(kind, Kind::Model | Kind::Inferencer) {
        return invalid("filter.library: only models and inferencers have a library");
    }
    if !filter.needs.is_empty() && kind == Kind::Model {
        return invalid("filter.needs: models have no needs");
    }
    let needs = &filter.needs;
    let device = needs.runnable_on.as_ref();
    for (field, value) in [
        ("filter.needs.maxRam", needs.max_ram),
        ("filter.needs.maxStorage", needs.max_storage),
    ] {
        if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return invalid(&format!("{field}: must be a non-negative number of GB"));
        }
    }
    if let Some(device) = device {
        device.validate()?;
    }
    Ok(())
}

/// Keeps only the last path component of a client's filename, without control characters.
fn clean_filename(filename: Option<&str>) -> Option<String> {
    let name = filename?.rsplit(['/', '\\']).next()?;
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    let mut end = name.len().min(MAX_FILE_LABEL_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Some(name[..end].to_owned())
}

fn default_filename(key: &ComponentKey) -> String {
    key.path_segments().join("-")
}

/// The content type becomes a response header on download, so only a plausible `type/subtype` in visible ASCII is
/// kept.
fn clean_content_type(content_type: Option<&str>) -> String {
    content_type
        .map(str::trim)
        .filter(|ct| {
            !ct.is_empty()
                && ct.len() <= MAX_FILE_LABEL_BYTES
                && ct.contains('/')
                && ct.bytes().all(|b| (0x20..0x7f).contains(&b))
        })
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_their_directories() {
        assert_eq!(
            clean_filename(Some("../../etc/passwd")).as_deref(),
            Some("passwd")
        );
        assert_eq!(
            clean_filename(Some("C:\\models\\m.zip")).as_deref(),
            Some("m.zip")
        );
        assert_eq!(
            clean_filename(Some("a\r\nb.zip")).as_deref(),
            Some("ab.zip")
        );
        assert_eq!(clean_filename(Some("dir/")), None);
        assert_eq!(clean_filename(Some("..")), None);
    }

    #[test]
    fn content_types_must_be_safe_header_values() {
        assert_eq!(
            clean_content_type(Some("application/zip")),
            "application/zip"
        );
        assert_eq!(
            clean_content_type(Some("evil\r\nx: y")),
            DEFAULT_CONTENT_TYPE
        );
        assert_eq!(clean_content_type(Some("zip")), DEFAULT_CONTENT_TYPE);
        assert_eq!(clean_content_type(None), DEFAULT_CONTENT_TYPE);
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(Some(100)).unwrap(), 100);
        assert!(page_size(Some(101)).is_err());
        assert!(page_size(Some(-1)).is_err());
    }
}
