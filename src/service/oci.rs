//! Use cases of the OCI distribution transport: components as artifacts, read through the service's own reads.
//! Manifests and configs are generated from metadata on every request (see `domain::oci`): nothing is stored,
//! so a manifest digest changes exactly when its component does, on every store and after a dump and restore.

use std::collections::BTreeSet;

use futures_util::StreamExt;

use super::{RepositoryService, ServiceError};
use crate::domain::oci::{self, Artifact, Document, Repository};
use crate::domain::{Component, ComponentFilter, ComponentKey, Kind};

/// Page size of the scans over a model's versions.
const SCAN_PAGE: i32 = 100;

/// What a manifest reference names: a tag, or a digest (`sha256:<hex>`).
fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

impl RepositoryService {
    /// Calls `visit` with each component of a repository (every version of a model; the one component of another
    /// kind) until it returns `Some`. Reads one page at a time.
    async fn oci_find<T>(
        &self,
        repo: &Repository,
        mut visit: impl FnMut(&Component) -> Option<T>,
    ) -> Result<Option<T>, ServiceError> {
        if repo.kind != Kind::Model {
            let key = ComponentKey::with_id(repo.kind, &repo.name)?;
            return Ok(self.find(&key).await?.as_ref().and_then(visit));
        }
        let filter = ComponentFilter {
            name: Some(repo.name.clone()),
            ..ComponentFilter::default()
        };
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list(
                    Kind::Model,
                    filter.clone(),
                    Some(SCAN_PAGE),
                    after.as_deref(),
                    false,
                )
                .await?;
            for (_, component) in &page.items {
                if let Some(found) = visit(component) {
                    return Ok(Some(found));
                }
            }
            match page.items.last() {
                Some((cursor, _)) if page.has_next => after = Some(cursor.clone()),
                _ => return Ok(None),
            }
        }
    }

    /// The component a tag names: a model version, else a model alias; `latest` for the other kinds.
    async fn oci_tagged(
        &self,
        repo: &Repository,
        tag: &str,
        device: Option<&str>,
    ) -> Result<Component, ServiceError> {
        let key = repo
            .key_for_tag(tag)
            .map_err(|e| ServiceError::NotFound(e.to_string()))?;
        if let Some(component) = self.find(&key).await? {
            return Ok(component);
        }
        if let ComponentKey::Model(model) = &key
            && let Ok(version) = self
                .resolve_alias_for(&model.name, &model.version, device)
                .await
        {
            return self.get(&version).await;
        }
        Err(ServiceError::NotFound(format!(
            "{} has no tag {tag}",
            repo.oci_name()
        )))
    }

    /// The manifest (or image index) a tag or digest names; a tag that is an alias names, for `device`, the version
    /// of its rollout cohort.
    pub async fn oci_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        device: Option<&str>,
    ) -> Result<Document, ServiceError> {
        if is_digest(reference) {
            return self
                .oci_find(repo, |c| {
                    oci::artifact(c).and_then(|a| a.manifest(reference).cloned())
                })
                .await?
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "{} has no manifest {reference}",
                        repo.oci_name()
                    ))
                });
        }
        let component = self.oci_tagged(repo, reference, device).await?;
        artifact_of(&component).map(|a| a.top)
    }

    /// The referrers index of the manifest `digest` (the signatures of its file), filtered by `artifact_type`;
    /// the empty index when no manifest of the repository has that digest, as registries answer.
    pub async fn oci_referrers(
        &self,
        repo: &Repository,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Document, ServiceError> {
        Ok(self
            .oci_find(repo, |c| {
                oci::artifact(c).and_then(|a| a.referrers_of(digest, artifact_type))
            })
            .await?
            .unwrap_or_else(oci::empty_index))
    }

    /// A config blob of the repository, recognised by recomputing the configs of its components.
    pub async fn oci_config(
        &self,
        repo: &Repository,
        digest: &str,
    ) -> Result<Option<Document>, ServiceError> {
        self.oci_find(repo, |c| {
            oci::artifact(c).and_then(|a| a.config(digest).cloned())
        })
        .await
    }

    /// The tags of a repository, sorted, after `last`, at most `n`; `None` when the repository has no component.
    pub async fn oci_tags(
        &self,
        repo: &Repository,
        last: Option<&str>,
        n: usize,
    ) -> Result<Option<Vec<String>>, ServiceError> {
        let mut tags = Bounded::new(n, last);
        let mut exists = false;
        self.oci_find(repo, |c| {
            exists = true;
            // Only what has a file is pulled; the scan goes on through every version.
            match (&c.key, oci::artifact(c)) {
                (_, None) => {}
                (ComponentKey::Model(m), Some(_)) => {
                    for name in std::iter::once(&m.version).chain(&c.aliases) {
                        if let Some(tag) = oci::encode_tag(name) {
                            tags.insert(tag);
                        }
                    }
                }
                (_, Some(_)) => tags.insert("latest".to_string()),
            }
            None::<()>
        })
        .await?;
        Ok(exists.then(|| tags.into_vec()))
    }

    /// The repositories with at least one pullable component, sorted, after `last`, at most `n`. Reads every
    /// component once, keeping at most `n + 1` names.
    pub async fn oci_catalog(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, ServiceError> {
        let mut names = Bounded::new(n, last);
        for kind in Kind::ALL {
            let mut components = self.list_all(kind).await?;
            while let Some(component) = components.next().await {
                let component = component?;
                if oci::artifact(&component).is_some() {
                    names.insert(Repository::of(&component.key).oci_name());
                }
            }
        }
        Ok(names.into_vec())
    }
}

fn artifact_of(component: &Component) -> Result<Artifact, ServiceError> {
    oci::artifact(component)
        .ok_or_else(|| ServiceError::NotFound(format!("{} has no file to pull yet", component.key)))
}

/// The first `n` distinct strings after `last`, in order, whatever order they are inserted in.
struct Bounded<'a> {
    n: usize,
    last: Option<&'a str>,
    items: BTreeSet<String>,
}

impl<'a> Bounded<'a> {
    fn new(n: usize, last: Option<&'a str>) -> Self {
        Self {
            n,
            last,
            items: BTreeSet::new(),
        }
    }

    fn insert(&mut self, item: String) {
        if self.last.is_some_and(|last| item.as_str() <= last) {
            return;
        }
        self.items.insert(item);
        if self.items.len() > self.n {
            self.items.pop_last();
        }
    }

    fn into_vec(self) -> Vec<String> {
        self.items.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn bounded_keeps_the_first_n_after_last() {
        let mut b = Bounded::new(2, Some("b"));
        for s in ["d", "a", "c", "b", "e", "c"] {
            b.insert(s.to_string());
        }
        assert_eq!(b.into_vec(), ["c", "d"]);
    }
}
