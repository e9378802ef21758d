//! Edge mirrors: keep a verified, current copy of what a site's devices can run, from an upstream repository, and
//! keep serving it when the link is down.
//!
//! A first sync lists the upstream's `runnableOn` for each device (plus the models those components reference and
//! the extras), then the mirror follows the upstream's change feed from the sequence it applied last, which it keeps
//! in its own store. Every change is applied by reading the component's current state upstream, so applying twice
//! is harmless and a restart may repeat the last page. When the feed no longer holds that sequence, the mirror
//! reconciles in full. The mirror's store appends events of its own as it applies changes: a mirror can be the
//! upstream of another.

mod convert;
mod fetch;
mod status;
mod upstream;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use self::fetch::{FetchError, Fetcher};
pub use self::status::{MirrorSnapshot, MirrorStatus, SyncState};
use self::upstream::{Upstream, UpstreamError};
use crate::domain::{Component, ComponentKey, Device, DomainError, Kind, ModelKey, Sha256};
use crate::service::signing::SignatureMode;
use crate::store::{Store, StoreError};

/// First wait after a failure; doubled after each one up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Who the mirror's alias moves are recorded as, in its alias history.
const MIRROR_LABEL: &str = "mirror";
/// Longest wait for news from the upstream before asking anyway (the event stream may miss a wake-up).
const POLL: Duration = Duration::from_secs(10);
/// Most refused components listed in the status at once.
const MAX_PROBLEMS: usize = 100;

/// One kind of device at the site: the `DeviceInput` sent upstream and the same device for local matching.
#[derive(Debug, Clone)]
pub struct MirrorDevice {
    pub input: Value,
    pub device: Device,
}

/// A pipeline the site runs, on its device: the mirror holds its parts (every version of a model named by an
/// alias, so the alias can move without a download) and the builds that run on the device's platform.
#[derive(Debug, Clone)]
pub struct MirrorPipeline {
    pub pipeline: crate::domain::pipeline::Pipeline,
    pub device: Device,
}

#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub upstream: String,
    pub token: Option<String>,
    pub devices: Vec<MirrorDevice>,
    pub include: Vec<ComponentKey>,
    pub pipelines: Vec<MirrorPipeline>,
    pub max_rate: Option<u64>,
    pub concurrency: usize,
    pub serve_stale: bool,
    /// Where partial files wait (on the store's file system, so a verified file moves into it without a copy).
    pub partial_dir: PathBuf,
    /// The largest file the mirror keeps (its own `--max-upload-size`): a component with a larger one is refused.
    pub max_file_size: u64,
    /// The mirror's own trust policy and mode: it verifies signatures itself, never taking the upstream's word.
    pub signing: std::sync::Arc<crate::service::signing::Signing>,
}

impl MirrorConfig {
    /// The extras and every pipeline's parts named by key.
    fn included(&self) -> Vec<ComponentKey> {
        let mut keys = self.include.clone();
        for p in &self.pipelines {
            keys.extend(
                p.pipeline
                    .parts()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|part| part.key),
            );
        }
        keys
    }

    /// The models pipelines name by an alias: every version is kept.
    fn aliased_models(&self) -> BTreeSet<String> {
        self.pipelines
            .iter()
            .filter_map(|p| match &p.pipeline.model {
                Some(crate::domain::pipeline::ModelRef::Alias { name, .. }) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the mirror's store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the upstream offered something invalid: {0}")]
    Invalid(#[from] DomainError),
}

/// Parses `kind:key` of `--mirror-include`: `model:NAME/VERSION`, `service:ID`, ...
pub fn parse_include(text: &str) -> Result<ComponentKey, String> {
    let (kind, key) = text.split_once(':').ok_or_else(|| {
        format!("{text:?}: expected kind:key, such as service:detector or model:yolo/v8")
    })?;
    let kind =
        Kind::parse(kind.trim()).ok_or_else(|| format!("{text:?}: unknown kind {kind:?}"))?;
    let key = match kind {
        Kind::Model => {
            let (name, version) = key
                .split_once('/')
                .ok_or_else(|| format!("{text:?}: a model is model:NAME/VERSION"))?;
            ComponentKey::model(name, version)
        }
        kind => ComponentKey::with_id(kind, key),
    };
    key.map_err(|e| format!("{text:?}: {e}"))
}

/// The persisted state: which upstream, and the last sequence of its feed applied (none before a full sync).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedState {
    upstream: String,
    last_sequence: Option<u64>,
    last_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The id of the upstream feed `last_sequence` is of: another id means the upstream was reset.
    #[serde(default)]
    feed_id: Option<String>,
}

/// The sync, ready to start, and the status it will keep (the service shows it before the sync runs).
pub fn prepare(
    store: Arc<dyn Store>,
    config: MirrorConfig,
) -> Result<(MirrorStatus, MirrorTask), reqwest::Error> {
    let status = MirrorStatus::new(&config.upstream, config.serve_stale);
    let upstream = Upstream::new(&config.upstream, config.token.clone())?;
    let fetcher = Fetcher::new(
        upstream.clone(),
        config.partial_dir.clone(),
        config.max_rate,
        config.concurrency,
        status.clone(),
    );
    let wake = Arc::new(tokio::sync::Notify::new());
    let mirror = Arc::new(Mirror {
        store,
        upstream,
        fetcher,
        status: status.clone(),
        config,
        digest_locks: Default::default(),
        wake: wake.clone(),
    });
    Ok((status, MirrorTask { mirror, wake }))
}

/// A prepared sync: its tasks run once spawned.
pub struct MirrorTask {
    mirror: Arc<Mirror>,
    wake: Arc<tokio::sync::Notify>,
}

impl MirrorTask {
    /// Starts following the upstream's feed and syncing.
    pub fn spawn(self) {
        tokio::spawn(watch_events(self.mirror.upstream.clone(), self.wake));
        tokio::spawn(self.mirror.run());
    }
}

struct Mirror {
    store: Arc<dyn Store>,
    upstream: Upstream,
    fetcher: Arc<Fetcher>,
    status: MirrorStatus,
    config: MirrorConfig,
    /// One transfer per digest at a time, held until the component that needs it is stored.
    digest_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    wake: Arc<tokio::sync::Notify>,
}

/// Opens the upstream's event stream and wakes the follower on every line: the feed is then read over GraphQL.
/// Reconnects with backoff when the stream breaks.
async fn watch_events(upstream: Upstream, wake: Arc<tokio::sync::Notify>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Ok(response) = upstream.event_stream().await {
            backoff = FIRST_BACKOFF;
            wake.notify_one();
            let mut body = response.bytes_stream();
            while let Ok(Some(Ok(chunk))) =
                tokio::time::timeout(Duration::from_secs(45), body.next()).await
            {
                if chunk.windows(3).any(|w| w == b"id:") {
                    wake.notify_one();
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Mirror {
    async fn run(self: Arc<Self>) {
        match self.load_state().await {
            Ok(saved) if saved.last_sequence.is_some() => self.status.update(|s| {
                s.synced = true;
                s.last_sequence = saved.last_sequence;
                s.last_sync_at = saved.last_sync_at;
            }),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the mirror's state could not be read"),
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.step().await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "mirror sync failed; serving what is held");
                    let message = e.to_string();
                    self.status.update(|s| {
                        s.state = SyncState::Offline;
                        s.last_error = Some(message);
                    });
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.wake.notified() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn load_state(&self) -> Result<SavedState, StoreError> {
        let saved: SavedState = match self.store.mirror_or_refuse()?.mirror_state().await? {
            Some(value) => serde_json::from_value(value).unwrap_or_default(),
            None => SavedState::default(),
        };
        // Another upstream's sequences mean nothing here: start with a full sync.
        if saved.upstream != self.upstream.base() {
            return Ok(SavedState::default());
        }
        Ok(saved)
    }

    async fn save_state(&self, last_sequence: u64, feed_id: &str) -> Result<(), StoreError> {
        let now = chrono::Utc::now();
        let state = SavedState {
            upstream: self.upstream.base().to_string(),
            last_sequence: Some(last_sequence),
            last_sync_at: Some(now),
            feed_id: Some(feed_id.to_string()),
        };
        self.store
            .mirror_or_refuse()?
            .save_mirror_state(&serde_json::to_value(state).expect("serialisable"))
            .await?;
        self.status
            .update(|s| s.last_sequence = Some(last_sequence));
        Ok(())
    }

    /// One pass: a full sync when needed, then follow the feed until something fails.
    async fn step(&self) -> Result<(), SyncError> {
        let saved = self.load_state().await?;
        let mut feed = saved.feed_id;
        let mut after = match saved.last_sequence {
            Some(sequence) => sequence,
            None => {
                let (sequence, id) = self.reconcile().await?;
                feed = Some(id);
                sequence
            }
        };
        loop {
            let (events, more, feed_id) = match self.upstream.events(after).await {
                Ok(page) => page,
                Err(UpstreamError::EventsExpired) => {
                    tracing::warn!(after, "the upstream's feed expired; reconciling in full");
                    (after, feed) = self.reconcile_again().await?;
                    continue;
                }
                Err(UpstreamError::FeedReset(why)) => {
                    tracing::warn!(
                        after,
                        why,
                        "the upstream's feed was reset; reconciling in full"
                    );
                    (after, feed) = self.reconcile_again().await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // A state saved before feeds had ids takes the first one seen; any other change is a reset upstream.
            match &feed {
                Some(known) if *known != feed_id => {
                    tracing::warn!(
                        was = known,
                        now = feed_id,
                        "the upstream's feed id changed; reconciling in full"
                    );
                    (after, feed) = self.reconcile_again().await?;
                    continue;
                }
                Some(_) => {}
                None => feed = Some(feed_id.clone()),
            }
            if let Some(first) = events.first() {
                let since = first.at;
                self.status.update(|s| {
                    s.state = SyncState::CatchingUp;
                    s.behind_since = Some(since);
                });
            }
            // Each key once per page: its current state upstream covers every event of it in the page.
            let mut seen = HashSet::new();
            let mut touched_needs = false;
            let mut model_names = BTreeSet::new();
            let last = events.last().map(|e| e.sequence);
            for event in events.iter().rev() {
                if let ComponentKey::Model(m) = &event.key {
                    model_names.insert(m.name.clone());
                }
                if !seen.insert(event.key.clone()) {
                    continue;
                }
                touched_needs |= event.key.kind() != Kind::Model;
                self.apply(&event.key, event.deleted).await?;
            }
            if touched_needs {
                model_names.extend(self.refresh_models().await?);
            }
            if !model_names.is_empty() {
                self.sync_aliases(Some(&model_names)).await?;
            }
            if let Some(last) = last {
                self.discard_partials().await;
                self.save_state(last, &feed_id).await?;
                after = last;
            }
            if !more {
                let now = chrono::Utc::now();
                self.status.update(|s| {
                    s.state = SyncState::Following;
                    s.behind_since = None;
                    s.last_sync_at = Some(now);
                    s.last_error = None;
                    s.pending_files = 0;
                    s.pending_bytes = 0;
                });
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// [`Mirror::reconcile`] when following broke off: where to follow from, and the feed now followed.
    async fn reconcile_again(&self) -> Result<(u64, Option<String>), SyncError> {
        let (sequence, feed_id) = self.reconcile().await?;
        Ok((sequence, Some(feed_id)))
    }

    /// Lists everything in scope upstream, stores what differs, removes what is no longer in scope; returns the
    /// upstream sequence from which to follow, and the id of the feed.
    async fn reconcile(&self) -> Result<(u64, String), SyncError> {
        self.status.update(|s| s.state = SyncState::Syncing);
        // Taken before listing: changes made while listing are applied again from the feed, harmlessly.
        let (sequence, feed_id) = self.upstream.head().await?;
        let mut wanted: HashMap<ComponentKey, Component> = HashMap::new();
        for device in &self.config.devices {
            for component in self.upstream.runnable_on(&device.input).await? {
                wanted.insert(component.key.clone(), component);
            }
        }
        for key in &self.config.included() {
            match self.upstream.component(key).await? {
                Some(component) => {
                    wanted.insert(key.clone(), component);
                }
                None => {
                    tracing::warn!(%key, "--mirror-include or --mirror-pipeline names a component the upstream does not hold")
                }
            }
        }
        for name in self.config.aliased_models() {
            for model in self.upstream.model_versions(&name).await? {
                wanted.insert(model.key.clone(), model);
            }
        }
        let (exact, any_version) = referenced_models(wanted.values());
        for key in exact {
            let key = ComponentKey::Model(key);
            if !wanted.contains_key(&key)
                && let Some(model) = self.upstream.component(&key).await?
            {
                wanted.insert(key, model);
            }
        }
        for name in &any_version {
            for model in self.upstream.model_versions(name).await? {
                wanted.insert(model.key.clone(), model);
            }
        }
        let held: BTreeSet<ModelKey> = wanted
            .keys()
            .filter_map(|k| match k {
                ComponentKey::Model(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        for model in self
            .rollout_kept(&rollout_names(&held, &any_version))
            .await?
        {
            let key = ComponentKey::Model(model);
            if !wanted.contains_key(&key)
                && let Some(model) = self.upstream.component(&key).await?
            {
                wanted.insert(key, model);
            }
        }
        // What the mirror refuses is not kept: a copy held from before goes too, as the upstream moved on from it.
        let mut problems = BTreeMap::new();
        let mut plan = Vec::new();
        wanted.retain(|key, component| {
            *component = self.for_devices(component.clone());
            match self.refusal(component) {
                Some(problem) => {
                    if problems.len() < MAX_PROBLEMS {
                        problems.insert(key.to_string(), problem);
                    }
                    false
                }
                None => true,
            }
        });
        self.status.update(|s| s.problems = problems);
        for component in wanted.values() {
            if differs(
                self.store.components().get(&component.key).await?,
                component,
            ) {
                plan.push(component.clone());
            }
        }
        let (files, bytes) = self.missing_files(&plan).await?;
        self.status.update(|s| {
            s.pending_files = files;
            s.pending_bytes = bytes;
        });
        let concurrency = self.config.concurrency.max(1);
        futures_util::stream::iter(plan.into_iter().map(|c| self.store_component(c)))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        for kind in Kind::ALL {
            let held: Vec<ComponentKey> = self
                .store
                .components()
                .scan(kind)
                .await?
                .map_ok(|c| c.key)
                .try_collect()
                .await?;
            for key in held {
                if !wanted.contains_key(&key) {
                    self.remove(&key).await?;
                }
            }
        }
        self.sync_aliases(None).await?;
        self.discard_partials().await;
        self.save_state(sequence, &feed_id).await?;
        let now = chrono::Utc::now();
        self.status.update(|s| {
            s.synced = true;
            s.last_sync_at = Some(now);
        });
        tracing::info!(
            components = wanted.len(),
            sequence,
            "mirror synced with its upstream"
        );
        Ok((sequence, feed_id))
    }

    /// Why the mirror will not keep `component`, if it will not: a file larger than it accepts itself, or (in
    /// enforce mode) a default file that no signature verifies under the mirror's own trust policy.
    fn refusal(&self, component: &Component) -> Option<String> {
        let signing = &self.config.signing;
        if signing.mode() == SignatureMode::Enforce
            && let Some(file) = &component.file
            && !signing.verified(&component.key, file)
        {
            return Some(format!(
                "refused: {}",
                crate::service::signing::unsigned_message(&component.key, file)
            ));
        }
        let limit = self.config.max_file_size;
        let file = component.files().find(|f| f.size > limit)?;
        Some(format!(
            "refused: its file {} is {} bytes, over this mirror's --max-upload-size of {limit} bytes",
            file.sha256, file.size
        ))
    }

    /// Records (or clears) the problem of `key` in the status.
    fn note_problem(&self, key: &ComponentKey, problem: Option<String>) {
        let key = key.to_string();
        self.status.update(|s| match problem {
            Some(problem) => {
                // Bounded: an upstream offering endless refusals cannot grow the status without limit.
                if s.problems.len() < MAX_PROBLEMS || s.problems.contains_key(&key) {
                    s.problems.insert(key, problem);
                }
            }
            None => {
                s.problems.remove(&key);
            }
        });
    }

    /// Applies one upstream change of `key`: stores its current state when in scope, else removes it.
    async fn apply(&self, key: &ComponentKey, deleted: bool) -> Result<(), SyncError> {
        let current = if deleted {
            None
        } else {
            self.upstream.component(key).await?
        };
        let wanted = match current {
            Some(component) if self.in_scope(&component).await? => Some(component),
            _ => None,
        };
        let wanted = wanted.map(|c| self.for_devices(c));
        let refusal = wanted.as_ref().and_then(|c| self.refusal(c));
        self.note_problem(key, refusal.clone());
        match wanted.filter(|_| refusal.is_none()) {
            Some(component) => {
                if differs(self.store.components().get(key).await?, &component) {
                    let (files, bytes) =
                        self.missing_files(std::slice::from_ref(&component)).await?;
                    self.status.update(|s| {
                        s.pending_files += files;
                        s.pending_bytes += bytes;
                    });
                    self.store_component(component).await?;
                }
            }
            None => self.remove(key).await?,
        }
        Ok(())
    }

    /// Every change so far is applied and no transfer is in flight: partial files left now are of files that
    /// left scope before they were complete.
    async fn discard_partials(&self) {
        match self.fetcher.discard_partials().await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, "removed partial files no component needs any more")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not remove stale partial files; retrying later")
            }
        }
    }

    /// Removes a component the mirror no longer keeps; first the mirror's aliases that name it (the upstream
    /// moved or deleted them before it could delete the version; [`Mirror::sync_aliases`] follows them).
    async fn remove(&self, key: &ComponentKey) -> Result<(), SyncError> {
        let Some(held) = self.store.components().get(key).await? else {
            return Ok(());
        };
        if let ComponentKey::Model(model) = key {
            for alias in &held.aliases {
                self.store
                    .aliases()
                    .move_alias(&model.name, alias, None, MIRROR_LABEL, None)
                    .await?;
            }
        }
        self.store
            .mirror_or_refuse()?
            .put_mirrored(key, None, Vec::new())
            .await?;
        Ok(())
    }

    /// Makes the mirror's aliases of the models named `names` (all it holds with `None`) the upstream's, for the
    /// versions it holds: an alias whose version the mirror does not keep is not kept either.
    async fn sync_aliases(&self, names: Option<&BTreeSet<String>>) -> Result<(), SyncError> {
        let mut held = BTreeSet::new();
        let mut models = self.store.components().scan(Kind::Model).await?;
        while let Some(model) = models.try_next().await? {
            if let ComponentKey::Model(m) = model.key {
                held.insert(m);
            }
        }
        let names: BTreeSet<String> = match names {
            Some(names) => names.clone(),
            None => held.iter().map(|m| m.name.clone()).collect(),
        };
        let mut wanted = BTreeMap::new();
        for name in &names {
            for model in self.upstream.model_versions(name).await? {
                let ComponentKey::Model(m) = &model.key else {
                    continue;
                };
                if held.contains(m) {
                    for alias in &model.aliases {
                        wanted.insert((name.clone(), alias.clone()), m.version.clone());
                    }
                }
            }
        }
        let mut here = BTreeMap::new();
        for record in self.store.aliases().alias_records().await? {
            if let Some(version) = record.version
                && names.contains(&record.model)
            {
                here.insert((record.model, record.alias), version);
            }
        }
        for ((name, alias), version) in &wanted {
            if here.get(&(name.clone(), alias.clone())) != Some(version) {
                self.store
                    .aliases()
                    .move_alias(name, alias, Some(version), MIRROR_LABEL, None)
                    .await?;
            }
        }
        for (name, alias) in here.keys() {
            if !wanted.contains_key(&(name.clone(), alias.clone())) {
                self.store
                    .aliases()
                    .move_alias(name, alias, None, MIRROR_LABEL, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the mirror keeps `component`: an extra, runnable on a device, or a model such a component needs.
    async fn in_scope(&self, component: &Component) -> Result<bool, SyncError> {
        if self.config.included().contains(&component.key) {
            return Ok(true);
        }
        if let ComponentKey::Model(model) = &component.key
            && self.config.aliased_models().contains(&model.name)
        {
            return Ok(true);
        }
        match &component.key {
            ComponentKey::Model(model) => {
                let (exact, any_version) = self.held_references().await?;
                if exact.contains(model) || any_version.contains(&model.name) {
                    return Ok(true);
                }
                let names = rollout_names(&exact, &any_version);
                if !names.contains(&model.name) {
                    return Ok(false);
                }
                let name = BTreeSet::from([model.name.clone()]);
                Ok(self.rollout_kept(&name).await?.contains(model))
            }
            _ => Ok(self.runnable(component)),
        }
    }

    /// As `runnableOn` lists it: libraries and models on the device, and some build that fits.
    fn runnable(&self, component: &Component) -> bool {
        component.spec.needs().is_some()
            && self.config.devices.iter().any(|d| d.device.runs(component))
    }

    /// The models referenced by what the mirror holds, and by the extras.
    async fn held_references(&self) -> Result<(BTreeSet<ModelKey>, BTreeSet<String>), SyncError> {
        let mut held = Vec::new();
        for kind in Kind::WITH_NEEDS {
            let mut scan = self.store.components().scan(kind).await?;
            while let Some(component) = scan.try_next().await? {
                held.push(component);
            }
        }
        let (mut exact, any_version) = referenced_models(held.iter());
        exact.extend(self.config.included().into_iter().filter_map(|k| match k {
            ComponentKey::Model(m) => Some(m),
            _ => None,
        }));
        let mut any_version = any_version;
        any_version.extend(self.config.aliased_models());
        Ok((exact, any_version))
    }

    /// The versions of models `names` that the upstream's rollouts keep here: targets of running or paused
    /// rollouts (fetched before any device's cohort is switched), and completed ones while their alias names them.
    async fn rollout_kept(
        &self,
        names: &BTreeSet<String>,
    ) -> Result<BTreeSet<ModelKey>, SyncError> {
        let mut kept = BTreeSet::new();
        for name in names {
            for version in self.upstream.rollout_targets(name).await? {
                kept.insert(ModelKey::new(name.clone(), version)?);
            }
        }
        Ok(kept)
    }

    /// After a change to what the mirror holds: fetches the models now referenced, removes those no longer;
    /// returns the names of the models it fetched or removed.
    async fn refresh_models(&self) -> Result<BTreeSet<String>, SyncError> {
        let mut touched = BTreeSet::new();
        let (exact, any_version) = self.held_references().await?;
        for model in &exact {
            let key = ComponentKey::Model(model.clone());
            if self.store.components().get(&key).await?.is_none() {
                self.apply(&key, false).await?;
                touched.insert(model.name.clone());
            }
        }
        for name in &any_version {
            for model in self.upstream.model_versions(name).await? {
                let key = model.key.clone();
                if differs(self.store.components().get(&key).await?, &model) {
                    self.apply(&key, false).await?;
                    touched.insert(name.clone());
                }
            }
        }
        let rollouts = self
            .rollout_kept(&rollout_names(&exact, &any_version))
            .await?;
        for model in &rollouts {
            let key = ComponentKey::Model(model.clone());
            if self.store.components().get(&key).await?.is_none() {
                self.apply(&key, false).await?;
                touched.insert(model.name.clone());
            }
        }
        let mut models = self.store.components().scan(Kind::Model).await?;
        let mut stale = Vec::new();
        while let Some(model) = models.try_next().await? {
            if let ComponentKey::Model(m) = &model.key
                && !exact.contains(m)
                && !any_version.contains(&m.name)
                && !rollouts.contains(m)
            {
                stale.push(model.key);
            }
        }
        for key in stale {
            if let ComponentKey::Model(m) = &key {
                touched.insert(m.name.clone());
            }
            self.remove(&key).await?;
        }
        Ok(touched)
    }

    /// The component with only the variants that fit at least one of the site's devices (all of them when a
    /// device states no platform: it may run any) and, in enforce mode, whose signatures the mirror's own trust
    /// policy verifies: the upstream's word is never taken. Unverified files are counted in the status.
    fn for_devices(&self, component: Component) -> Component {
        let mut component = self.for_platforms(component);
        let signing = &self.config.signing;
        if signing.mode() == SignatureMode::Off {
            return component;
        }
        let key = component.key.clone();
        let unverified = component
            .files()
            .filter(|f| !signing.verified(&key, f))
            .count() as u64;
        if unverified > 0 {
            self.status.update(|s| s.unverified_files += unverified);
        }
        if signing.mode() == SignatureMode::Enforce {
            component
                .variants
                .retain(|v| signing.verified(&key, &v.file));
        }
        component
    }

    fn for_platforms(&self, mut component: Component) -> Component {
        let platforms: Option<Vec<_>> = self
            .config
            .devices
            .iter()
            .map(|d| &d.device)
            .chain(self.config.pipelines.iter().map(|p| &p.device))
            .map(|d| d.platform.as_ref())
            .collect();
        if let Some(platforms) = platforms {
            component
                .variants
                .retain(|v| platforms.iter().any(|p| v.platform.runs_on(p)));
        }
        component
    }

    /// Files of `components` the mirror does not hold yet: how many, and their bytes.
    async fn missing_files(&self, components: &[Component]) -> Result<(u64, u64), SyncError> {
        let mut seen = HashSet::new();
        let (mut files, mut bytes) = (0, 0);
        for file in components.iter().flat_map(Component::files) {
            if seen.insert(file.sha256.clone())
                && self
                    .store
                    .blobs()
                    .blob(&Sha256::parse(&file.sha256)?)
                    .await?
                    .is_none()
            {
                files += 1;
                bytes += file.size;
            }
        }
        Ok((files, bytes))
    }

    /// Fetches the files of `component` that the mirror lacks, verified, then stores the component as it is.
    async fn store_component(&self, component: Component) -> Result<(), SyncError> {
        let digests: BTreeSet<(Sha256, u64)> = component
            .files()
            .map(|f| Ok((Sha256::parse(&f.sha256)?, f.size)))
            .collect::<Result<_, DomainError>>()?;
        // Locked in digest order, so two components that share files never wait on each other in a circle.
        let mut guards = Vec::new();
        for (sha256, _) in &digests {
            let lock = self
                .digest_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(sha256.to_string())
                .or_default()
                .clone();
            guards.push(lock.lock_owned().await);
        }
        let mut staged = Vec::new();
        for (sha256, size) in &digests {
            if self.store.blobs().blob(sha256).await?.is_some() {
                continue;
            }
            let file = self.fetcher.fetch(sha256, *size).await?;
            staged.push(
                self.store
                    .blobs()
                    .stage_verified(file, sha256, *size)
                    .await?,
            );
            self.status
                .update(|s| s.pending_files = s.pending_files.saturating_sub(1));
        }
        let key = component.key.clone();
        self.store
            .mirror_or_refuse()?
            .put_mirrored(&key, Some(component), staged)
            .await?;
        drop(guards);
        Ok(())
    }
}

/// What `devices` can run (transformations, services, inferencers) and the models those reference: the content
/// of an air-gapped site's archive (`dump --device`).
pub(crate) fn for_devices(components: Vec<Component>, devices: &[Device]) -> Vec<Component> {
    let runnable = |c: &Component| c.spec.needs().is_some() && devices.iter().any(|d| d.runs(c));
    let (exact, any_version) = referenced_models(components.iter().filter(|c| runnable(c)));
    components
        .into_iter()
        .filter(|c| match &c.key {
            ComponentKey::Model(m) => exact.contains(m) || any_version.contains(&m.name),
            _ => runnable(c),
        })
        .collect()
}

/// Makes a store restored from a device archive follow `upstream`'s feed from the archive's `sequence` once the
/// mirror has a link, instead of syncing in full.
pub async fn seed_state(
    store: &dyn Store,
    upstream: &str,
    sequence: u64,
) -> Result<(), StoreError> {
    let state = SavedState {
        upstream: upstream.trim().trim_end_matches('/').to_string(),
        last_sequence: Some(sequence),
        last_sync_at: None,
        feed_id: None,
    };
    store
        .mirror_or_refuse()?
        .save_mirror_state(&serde_json::to_value(state).expect("serialisable"))
        .await
}

/// Whether the mirror must store `wanted` over what it holds. Aliases are compared apart ([`Mirror::sync_aliases`]).
fn differs(held: Option<Component>, wanted: &Component) -> bool {
    match held {
        Some(mut held) => {
            held.aliases.clone_from(&wanted.aliases);
            &held != wanted
        }
        None => true,
    }
}

/// The models whose rollouts the mirror follows: those it holds some exact version of. Models of which it keeps
/// every version need no rollout to have the target.
fn rollout_names(exact: &BTreeSet<ModelKey>, any_version: &BTreeSet<String>) -> BTreeSet<String> {
    exact
        .iter()
        .map(|m| m.name.clone())
        .filter(|name| !any_version.contains(name))
        .collect()
}

/// The models `components` need: exact versions, and names of which any version does (`*` or empty).
fn referenced_models<'a>(
    components: impl Iterator<Item = &'a Component>,
) -> (BTreeSet<ModelKey>, BTreeSet<String>) {
    let mut exact = BTreeSet::new();
    let mut any_version = BTreeSet::new();
    for component in components {
        let Some(needs) = component.spec.needs() else {
            continue;
        };
        for (name, version) in &needs.available_models {
            let version = version.trim();
            if version.is_empty() || version == "*" {
                any_version.insert(name.clone());
            } else if let Ok(key) = ModelKey::new(name.clone(), version) {
                exact.insert(key);
            }
        }
    }
    (exact, any_version)
}
