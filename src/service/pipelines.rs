//! Resolving a whole inference pipeline for a device: the service looks the parts up, the domain decides.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};

use super::{RepositoryService, ServiceError};
use crate::domain::pipeline::{ModelRef, Pipeline, Resolution, Role, models_needed, resolve};
use crate::domain::{ComponentKey, Device, EventFilter, ModelKey};

/// Resolutions of one pipeline as they change.
pub type ResolutionStream = Pin<Box<dyn Stream<Item = Result<Resolution, ServiceError>> + Send>>;

impl RepositoryService {
    /// What `pipeline` resolves to on `device`: each part's file, the sums of their needs, every problem and a
    /// lock digest. Parts that are missing are problems of the answer, not errors; names that are no valid key are.
    pub async fn resolve_pipeline(
        &self,
        pipeline: &Pipeline,
        device: &Device,
    ) -> Result<Resolution, ServiceError> {
        device.validate()?;
        let mut parts = pipeline.parts()?;
        if let Some(ModelRef::Alias { name, alias }) = &pipeline.model
            && let Some(part) = parts.iter_mut().find(|p| p.role == Role::Model)
        {
            part.key = self
                .store
                .aliases()
                .resolve_alias(name, alias)
                .await?
                .map(|version| ComponentKey::model(name.clone(), version))
                .transpose()?;
        }
        let found = futures_util::future::try_join_all(parts.iter().map(|part| async move {
            match &part.key {
                Some(key) => self.find(key).await,
                None => Ok(None),
            }
        }))
        .await?;
        for (part, component) in parts.iter_mut().zip(found) {
            part.component = component;
        }
        // Which of the model versions the parts need the repository has, in one round trip.
        let wanted: Vec<ModelKey> = models_needed(&parts)
            .into_iter()
            .flat_map(|(name, versions)| {
                versions
                    .into_iter()
                    .filter_map(move |version| ModelKey::new(name.clone(), version).ok())
            })
            .collect();
        let present: BTreeSet<(String, String)> = if wanted.is_empty() {
            BTreeSet::new()
        } else {
            self.models(&wanted)
                .await?
                .into_iter()
                .filter_map(|c| match c.key {
                    ComponentKey::Model(m) => Some((m.name, m.version)),
                    _ => None,
                })
                .collect()
        };
        Ok(resolve(parts, device, &|name, version| {
            present.contains(&(name.to_owned(), version.to_owned()))
        }))
    }

    /// The resolution of `pipeline` for `device` now, then again each time a change to one of its parts (or an
    /// alias move of its model) changes what the device would fetch (the lock) or whether it fits. Follows the
    /// feed from before the first resolution, so no change between the two is missed.
    pub async fn follow_pipeline(
        self: &Arc<Self>,
        pipeline: Pipeline,
        device: Device,
    ) -> Result<ResolutionStream, ServiceError> {
        let events = self.follow(None, EventFilter::default()).await?;
        let first = self.resolve_pipeline(&pipeline, &device).await?;
        let parts: BTreeSet<String> = pipeline
            .parts()?
            .into_iter()
            .filter_map(|p| p.key.map(|k| k.to_string()))
            .collect();
        let model = pipeline.model.as_ref().map(|m| match m {
            ModelRef::Version { name, .. } | ModelRef::Alias { name, .. } => name.clone(),
        });
        let following = Following {
            service: self.clone(),
            pipeline,
            device,
            parts,
            model,
            events,
            last: None,
            first: Some(first),
        };
        Ok(Box::pin(futures_util::stream::unfold(
            following,
            |mut f| async move {
                let item = f.next().await?;
                Some((item, f))
            },
        )))
    }
}

/// The state of [`RepositoryService::follow_pipeline`].
struct Following {
    service: Arc<RepositoryService>,
    pipeline: Pipeline,
    device: Device,
    /// The parts' keys as text, and the model's name (its alias moves and versions matter).
    parts: BTreeSet<String>,
    model: Option<String>,
    events: super::events::EventStream,
    /// The lock and fit of the last resolution sent.
    last: Option<(String, bool)>,
    first: Option<Resolution>,
}

impl Following {
    fn concerns(&self, key: &ComponentKey) -> bool {
        self.parts.contains(&key.to_string())
            || matches!((key, &self.model), (ComponentKey::Model(m), Some(name)) if &m.name == name)
    }

    async fn next(&mut self) -> Option<Result<Resolution, ServiceError>> {
        if let Some(first) = self.first.take() {
            self.last = Some((first.lock.clone(), first.fits));
            return Some(Ok(first));
        }
        loop {
            let event = match self.events.next().await? {
                Ok(event) => event,
                Err(e) => return Some(Err(e)),
            };
            if !self.concerns(&event.draft.key) {
                continue;
            }
            let resolution = match self
                .service
                .resolve_pipeline(&self.pipeline, &self.device)
                .await
            {
                Ok(resolution) => resolution,
                Err(e) => return Some(Err(e)),
            };
            let now = (resolution.lock.clone(), resolution.fits);
            if self.last.as_ref() != Some(&now) {
                self.last = Some(now);
                return Some(Ok(resolution));
            }
        }
    }
}
