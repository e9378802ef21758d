//! Resolving a whole inference pipeline for a device: the service looks the parts up, the domain decides.

use std::collections::BTreeSet;

use super::{RepositoryService, ServiceError};
use crate::domain::pipeline::{ModelRef, Pipeline, Resolution, Role, models_needed, resolve};
use crate::domain::{ComponentKey, Device, ModelKey};

impl RepositoryService {
    /// What `pipeline` resolves to on `device`: each part's file, the sums of their needs, every problem and a
    /// lock digest. Parts that are missing are problems of the answer, not errors; names that are no valid key are.
    pub async fn resolve_pipeline(
        &self,
        pipeline: &Pipeline,
        device: &Device,
    ) -> Result<Resolution, ServiceError> {
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
}
