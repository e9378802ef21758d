//! Batches the model references of a response into one store round trip.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;

use crate::domain::{Component, ComponentKey, ModelKey};
use crate::service::{RepositoryService, ServiceError};

/// Loads models by key for `availableModels { model }`. One per request, so nothing is cached across requests.
pub struct ModelLoader {
    pub service: Arc<RepositoryService>,
}

impl Loader<ModelKey> for ModelLoader {
    type Value = Component;
    type Error = Arc<ServiceError>;

    async fn load(&self, keys: &[ModelKey]) -> Result<HashMap<ModelKey, Component>, Self::Error> {
        let models = self.service.models(keys).await.map_err(Arc::new)?;
        Ok(models
            .into_iter()
            .filter_map(|model| match &model.key {
                ComponentKey::Model(key) => Some((key.clone(), model)),
                _ => None,
            })
            .collect())
    }
}
