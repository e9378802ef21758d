//! The write rules of a component, as pure functions: which file a put replaces, whether a write is refused
//! (immutable, locked, aliased), how an update is applied, and which event each write emits. A store reads the
//! component, asks here, and commits the answer atomically; no backend decides any of this itself.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::signing::{Bundle, MAX_SIGNATURES_PER_FILE, Signature};
use super::{
    Component, DomainError, EventDraft, FileNeeds, Platform, Sha256, SpecUpdate, StoredFile,
    Variant,
};
use crate::domain::ComponentKey;

/// Most per-platform files (builds) one component holds: every listing and image index carries them all.
pub const MAX_VARIANTS: usize = 64;

/// Why the component's own rules refuse a write.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refusal {
    /// The file (or the metadata) may not change: `--immutable-files`, or the component is locked.
    #[error("{0}")]
    Immutable(String),
    /// Aliases name this model version, so it cannot be deleted.
    #[error("{key} is named by the aliases {aliases:?}: move or delete them first")]
    Aliased {
        key: ComponentKey,
        aliases: Vec<String>,
    },
    /// The write was made as of a revision the component has moved on from: someone else wrote in between.
    #[error(
        "{key} is at revision {actual}, not {expected}: it changed since it was read; read it again and reapply \
         the change"
    )]
    Stale {
        key: ComponentKey,
        expected: u64,
        actual: u64,
    },
    /// The write names a file the component does not have.
    #[error("{0}")]
    NoFile(String),
    /// Live devices report running this component (device reports): deleting it needs `force`.
    #[error("{devices} live devices report running {key}: delete with force to delete it anyway")]
    InUse { key: ComponentKey, devices: u64 },
    /// A cap on what one component keeps (signatures per file) is reached.
    #[error("{0}")]
    Full(String),
    /// A rollout is moving the alias: it cannot move (or start moving) otherwise until the rollout ends.
    #[error("{0}")]
    RolloutActive(String),
    /// The rollout has ended: it cannot be paused, resumed or aborted.
    #[error("{0}")]
    RolloutFinished(String),
}

/// Why an update is not applied: a rule of the component, or a value that breaks the domain.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum UpdateError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Invalid(#[from] DomainError),
}

/// Whether a component that has a file may have it replaced (or be deleted): the server's `--immutable-files`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FilePolicy {
    #[default]
    Replaceable,
    Immutable,
}

impl FilePolicy {
    pub fn immutable(immutable: bool) -> Self {
        if immutable {
            Self::Immutable
        } else {
            Self::Replaceable
        }
    }
}

/// A file put into a component: the component after, the file it replaced (its bytes lose a reference once the
/// write commits) and the event to append with it.
#[derive(Debug, Clone)]
pub struct FilePut {
    pub component: Component,
    pub replaced: Option<StoredFile>,
    pub event: EventDraft,
}

/// A metadata update decided: the component after it and its event.
#[derive(Debug, Clone)]
pub struct Updated {
    pub component: Component,
    pub event: EventDraft,
}

/// A deletion decided: the files whose bytes lose a reference, and the event.
#[derive(Debug, Clone)]
pub struct Deletion {
    pub released: Vec<StoredFile>,
    pub event: EventDraft,
}

impl Component {
    /// Every stored file of the component: the default one and those of its variants, in that order.
    pub fn files(&self) -> impl Iterator<Item = &StoredFile> {
        self.file
            .iter()
            .chain(self.variants.iter().map(|v| &v.file))
    }

    /// The default file (`platform` `None`) or the variant file of exactly that platform.
    pub fn file_of(&self, platform: Option<&Platform>) -> Option<&StoredFile> {
        match platform {
            None => self.file.as_ref(),
            Some(platform) => self
                .variants
                .iter()
                .find(|v| &v.platform == platform)
                .map(|v| &v.file),
        }
    }

    fn file_of_mut(&mut self, platform: Option<&Platform>) -> Option<&mut StoredFile> {
        match platform {
            None => self.file.as_mut(),
            Some(platform) => self
                .variants
                .iter_mut()
                .find(|v| &v.platform == platform)
                .map(|v| &mut v.file),
        }
    }

    /// The same files, to rewrite their records (a store names the bytes its own way).
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut StoredFile> {
        self.file
            .iter_mut()
            .chain(self.variants.iter_mut().map(|v| &mut v.file))
    }

    /// Puts `file` in as the default file (`platform` `None`) or as that platform's variant, replacing the file
    /// there (and the needs the variant states: `needs` describe the build uploaded). Refused when the replaced file
    /// may not change, or when a locked component would gain a file.
    pub fn put_file(
        &self,
        platform: Option<Platform>,
        needs: Option<FileNeeds>,
        file: StoredFile,
        policy: FilePolicy,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<FilePut, Refusal> {
        self.check_revision(expected)?;
        if let Some(refused) = self.replacement_refused(platform.as_ref(), policy) {
            return Err(refused);
        }
        let mut after = self.next_revision();
        // The same bytes again (a retried upload) keep the signatures that vouch for them.
        let mut file = file;
        let current = self.file_of(platform.as_ref());
        if let Some(current) = current
            && current.sha256 == file.sha256
            && !file.sha256.is_empty()
        {
            file.signatures = current.signatures.clone();
        }
        let replaced = match platform {
            None => after.file.replace(file.clone()),
            Some(platform) => {
                let full = after.variants.len() >= MAX_VARIANTS;
                match after.variants.iter_mut().find(|v| v.platform == platform) {
                    Some(existing) => {
                        existing.needs = needs;
                        Some(std::mem::replace(&mut existing.file, file.clone()))
                    }
                    // Checked by `replacement_refused` above; kept for the count the store read in its step.
                    None if full => return Err(Refusal::Full(format!("{} is full", self.key))),
                    None => {
                        after.variants.push(Variant {
                            platform,
                            file: file.clone(),
                            needs,
                        });
                        None
                    }
                }
            }
        };
        after.updated_at = now;
        let event = EventDraft::attached(&after, &file, replaced.is_some());
        Ok(FilePut {
            component: after,
            replaced,
            event,
        })
    }

    /// Why an upload for `platform` may not replace the file there, or `None` when it may: checked again by
    /// [`Component::put_file`], and before the bytes arrive so a refused upload is refused early.
    pub fn replacement_refused(
        &self,
        platform: Option<&Platform>,
        policy: FilePolicy,
    ) -> Option<Refusal> {
        let replaced = self.file_of(platform);
        if platform.is_some() && replaced.is_none() && self.variants.len() >= MAX_VARIANTS {
            return Some(Refusal::Full(format!(
                "{} has {MAX_VARIANTS} per-platform files, the most a component holds: replace one (upload with the \
                 same platform, accelerator and precision)",
                self.key
            )));
        }
        // A locked component that has a file gains none either: a new variant would change what devices of that
        // platform get. (Under `--immutable-files` alone, each variant may have its first file.)
        if replaced.is_none() && self.locked && self.files().next().is_some() {
            return Some(Refusal::Immutable(format!(
                "{} is locked: what devices get cannot change, so no file can be added for another platform",
                self.key
            )));
        }
        self.file_frozen(replaced?, policy)
    }

    /// Applies `update` to the metadata, validates the result and stamps it. A locked component refuses.
    pub fn apply_update(
        &self,
        update: &SpecUpdate,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<Updated, UpdateError> {
        self.check_revision(expected)?;
        if let Some(refused) = self.metadata_change_refused() {
            return Err(Refusal::Immutable(refused).into());
        }
        let mut after = self.next_revision();
        update(&mut after.spec)?;
        after.spec.validate()?;
        after.updated_at = now;
        let event = EventDraft::updated(self, &after);
        Ok(Updated {
            component: after,
            event,
        })
    }

    /// Decides a deletion. `naming_aliases` are the aliases that name this version now (the store knows them in
    /// the same transaction or double-checks stale marks): any of them keeps it.
    pub fn deletion(
        &self,
        policy: FilePolicy,
        naming_aliases: Vec<String>,
    ) -> Result<Deletion, Refusal> {
        if let Some(file) = self.files().next()
            && let Some(refused) = self.file_frozen(file, policy)
        {
            return Err(refused);
        }
        if !naming_aliases.is_empty() {
            return Err(Refusal::Aliased {
                key: self.key.clone(),
                aliases: naming_aliases,
            });
        }
        Ok(Deletion {
            released: self.files().cloned().collect(),
            event: EventDraft::deleted(self),
        })
    }

    /// Locks the component; `None` when it is locked already (nothing changes, so nothing goes on the feed).
    pub fn lock(&self, expected: Option<u64>) -> Result<Option<(Component, EventDraft)>, Refusal> {
        self.check_revision(expected)?;
        if self.locked {
            return Ok(None);
        }
        let locked = Component {
            locked: true,
            ..self.next_revision()
        };
        let event = EventDraft::locked(&locked);
        Ok(Some((locked, event)))
    }

    /// Attaches a signature to the default file (`platform` `None`) or to that platform's variant; `None` when the
    /// file has this very bundle already. A signature vouches for bytes without changing them, so a locked or
    /// immutable component takes one too; the bundle must sign exactly the file's bytes. `verifies` tells whether a
    /// signature of the file verifies under the server's trust policy: on a full file, a new signature that
    /// verifies takes the place of the oldest one that does not, so unverified bundles cannot crowd out the
    /// publisher's.
    pub fn add_signature(
        &self,
        platform: Option<&Platform>,
        bundle: &Bundle,
        added_by: &str,
        now: DateTime<Utc>,
        verifies: &dyn Fn(&StoredFile, &Signature) -> bool,
    ) -> Result<Option<(Component, EventDraft)>, UpdateError> {
        let mut after = self.next_revision();
        let file = after.file_of_mut(platform).ok_or_else(|| {
            Refusal::NoFile(match platform {
                None => format!("{} has no file to sign", self.key),
                Some(platform) => format!("{} has no file for the platform {platform}", self.key),
            })
        })?;
        let sha256 = Sha256::parse(&file.sha256)?;
        if !bundle.names(&sha256) {
            let signed: Vec<&str> = bundle.digests().iter().map(Sha256::as_str).collect();
            return Err(DomainError::new(
                "bundle",
                format!(
                    "the bundle signs the bytes with sha256 {}, not this file (sha256 {sha256}): sign the file that \
                     was uploaded",
                    signed.join(", ")
                ),
            )
            .into());
        }
        let signature = Signature::new(bundle, added_by, now);
        if file.signatures.iter().any(|s| s.id == signature.id) {
            return Ok(None);
        }
        if file.signatures.len() >= MAX_SIGNATURES_PER_FILE {
            let evicted = verifies(file, &signature)
                .then(|| {
                    file.signatures
                        .iter()
                        .position(|existing| !verifies(file, existing))
                })
                .flatten();
            match evicted {
                Some(at) => {
                    file.signatures.remove(at);
                }
                None => {
                    return Err(Refusal::Full(format!(
                        "the file has {MAX_SIGNATURES_PER_FILE} signatures, as many as a file keeps; a signature this \
                         server's trust policy verifies takes the place of one it does not"
                    ))
                    .into());
                }
            }
        }
        file.signatures.push(signature);
        let file = file.clone();
        let event = EventDraft::signature_added(&after, &file);
        Ok(Some((after, event)))
    }

    /// Marks (or unmarks) this model version as named by `alias`; `None` when that changes nothing. The marks
    /// are what a deletion checks in the same transaction or document.
    pub fn with_alias_mark(&self, alias: &str, named: bool) -> Option<Component> {
        let mut after = self.next_revision();
        let changed = if named {
            after.aliases.insert(alias.to_string())
        } else {
            after.aliases.remove(alias)
        };
        changed.then_some(after)
    }

    /// Refuses a write made as of another revision than the component's.
    pub fn check_revision(&self, expected: Option<u64>) -> Result<(), Refusal> {
        match expected {
            Some(expected) if expected != self.revision => Err(Refusal::Stale {
                key: self.key.clone(),
                expected,
                actual: self.revision,
            }),
            _ => Ok(()),
        }
    }

    fn next_revision(&self) -> Component {
        Component {
            revision: self.revision + 1,
            ..self.clone()
        }
    }

    /// The event of this component put exactly as an upstream has it (an edge mirror), over `before`: created,
    /// its files changed, or its metadata.
    pub fn mirrored_event(&self, before: Option<&Component>) -> EventDraft {
        let digests = |c: &Component| c.files().map(|f| f.sha256.clone()).collect::<Vec<_>>();
        match before {
            None => EventDraft::created(self),
            Some(before) if digests(before) != digests(self) => {
                EventDraft::file(self, before.file.is_some())
            }
            Some(before)
                if let Some(signed) = self.files().find(|f| {
                    before
                        .files()
                        .find(|b| b.sha256 == f.sha256)
                        .is_some_and(|b| b.signatures.len() < f.signatures.len())
                }) =>
            {
                EventDraft::signature_added(self, signed)
            }
            Some(before) => EventDraft::updated(before, self),
        }
    }

    fn file_frozen(&self, file: &StoredFile, policy: FilePolicy) -> Option<Refusal> {
        let why = if self.locked {
            "is locked"
        } else if policy == FilePolicy::Immutable {
            "has a file and files are immutable on this server"
        } else {
            return None;
        };
        let named = if file.sha256.is_empty() {
            &file.blob_id
        } else {
            &file.sha256
        };
        Some(Refusal::Immutable(format!(
            "{} {why}: its files ({named} ...) cannot be replaced and it cannot be deleted",
            self.key
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventType, Kind, ServiceSpec, Spec};

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + second, 0).unwrap()
    }

    fn service() -> Component {
        let key = ComponentKey::with_id(Kind::Service, "svc").unwrap();
        Component::new(key, Spec::Service(ServiceSpec::default()), at(0)).unwrap()
    }

    fn file(sha: char) -> StoredFile {
        StoredFile {
            blob_id: sha.to_string().repeat(64),
            size: 3,
            sha256: sha.to_string().repeat(64),
            content_type: "application/octet-stream".into(),
            filename: "f.bin".into(),
            uploaded_at: at(1),
            signatures: Vec::new(),
        }
    }

    fn arm() -> Platform {
        Platform::new("linux", "arm64", None, None, None).unwrap()
    }

    #[test]
    fn one_component_holds_at_most_64_builds_and_a_full_one_still_replaces_them() {
        let mut c = service();
        for n in 0..MAX_VARIANTS {
            let platform = arm().with_precision(Some(&format!("p{n}"))).unwrap();
            c = c
                .put_file(
                    Some(platform),
                    None,
                    file('a'),
                    FilePolicy::Replaceable,
                    None,
                    at(1),
                )
                .unwrap()
                .component;
        }
        let another = arm().with_precision(Some("one-more")).unwrap();
        assert!(matches!(
            c.replacement_refused(Some(&another), FilePolicy::Replaceable),
            Some(Refusal::Full(_))
        ));
        let put = c.put_file(
            Some(another),
            None,
            file('b'),
            FilePolicy::Replaceable,
            None,
            at(2),
        );
        assert!(matches!(put, Err(Refusal::Full(_))));
        let same = arm().with_precision(Some("p7")).unwrap();
        let replaced = c.put_file(
            Some(same),
            None,
            file('b'),
            FilePolicy::Replaceable,
            None,
            at(2),
        );
        assert_eq!(replaced.unwrap().component.variants.len(), MAX_VARIANTS);
    }

    #[test]
    fn a_put_replaces_the_file_of_its_platform_only() {
        let first = service()
            .put_file(None, None, file('a'), FilePolicy::Replaceable, None, at(1))
            .unwrap();
        assert_eq!(first.replaced, None);
        assert_eq!(first.event.event_type, EventType::FileUploaded);
        assert_eq!(first.component.updated_at, at(1));

        let variant = first
            .component
            .put_file(
                Some(arm()),
                None,
                file('b'),
                FilePolicy::Replaceable,
                None,
                at(2),
            )
            .unwrap();
        assert_eq!(variant.replaced, None, "a new platform replaces nothing");
        assert_eq!(variant.component.file, Some(file('a')));
        assert_eq!(variant.component.variants.len(), 1);

        let again = variant
            .component
            .put_file(
                Some(arm()),
                None,
                file('c'),
                FilePolicy::Replaceable,
                None,
                at(3),
            )
            .unwrap();
        assert_eq!(again.replaced, Some(file('b')));
        assert_eq!(again.event.event_type, EventType::FileReplaced);
        assert_eq!(again.event.file.as_ref().unwrap().sha256, file('c').sha256);
        let files: Vec<_> = again.component.files().map(|f| f.sha256.clone()).collect();
        assert_eq!(files, [file('a').sha256, file('c').sha256]);
    }

    #[test]
    fn immutable_files_refuse_a_replacement_but_not_a_first_file_of_a_platform() {
        let with_file = service()
            .put_file(None, None, file('a'), FilePolicy::Immutable, None, at(1))
            .expect("a first file is always allowed")
            .component;
        assert!(matches!(
            with_file.put_file(None, None, file('b'), FilePolicy::Immutable, None, at(2)),
            Err(Refusal::Immutable(_))
        ));
        assert!(
            with_file
                .put_file(
                    Some(arm()),
                    None,
                    file('b'),
                    FilePolicy::Immutable,
                    None,
                    at(2)
                )
                .is_ok()
        );
        assert!(matches!(
            with_file.deletion(FilePolicy::Immutable, Vec::new()),
            Err(Refusal::Immutable(_))
        ));
        assert!(
            service()
                .deletion(FilePolicy::Immutable, Vec::new())
                .is_ok(),
            "without a file there is nothing to keep"
        );
    }

    #[test]
    fn a_locked_component_keeps_its_files_metadata_and_existence() {
        let with_file = service()
            .put_file(None, None, file('a'), FilePolicy::Replaceable, None, at(1))
            .unwrap()
            .component;
        let (locked, event) = with_file.lock(None).unwrap().expect("not locked yet");
        assert_eq!(event.event_type, EventType::Locked);
        assert!(
            locked.lock(None).unwrap().is_none(),
            "locking twice changes nothing"
        );
        for platform in [None, Some(arm())] {
            let put = locked.put_file(
                platform.clone(),
                None,
                file('b'),
                FilePolicy::Replaceable,
                None,
                at(2),
            );
            assert!(matches!(put, Err(Refusal::Immutable(_))), "{platform:?}");
        }
        let update: SpecUpdate = Box::new(|_| Ok(()));
        assert!(matches!(
            locked.apply_update(&update, None, at(2)),
            Err(UpdateError::Refused(Refusal::Immutable(_)))
        ));
        assert!(
            locked
                .deletion(FilePolicy::Replaceable, Vec::new())
                .is_err()
        );
    }

    #[test]
    fn an_update_is_validated_stamped_and_announced_with_the_needs_before() {
        let before = service();
        let grow: SpecUpdate = Box::new(|spec| {
            if let Spec::Service(service) = spec {
                service.needs.ram = Some(2.0);
            }
            Ok(())
        });
        let updated = before.apply_update(&grow, None, at(5)).unwrap();
        assert_eq!(updated.component.updated_at, at(5));
        assert_eq!(updated.component.created_at, before.created_at);
        assert_eq!(updated.event.event_type, EventType::Updated);
        assert_eq!(updated.event.previous_needs.as_ref(), before.spec.needs());
        let negative: SpecUpdate = Box::new(|spec| {
            if let Spec::Service(service) = spec {
                service.needs.ram = Some(-1.0);
            }
            Ok(())
        });
        assert!(matches!(
            before.apply_update(&negative, None, at(6)),
            Err(UpdateError::Invalid(_))
        ));
    }

    #[test]
    fn a_version_an_alias_names_is_not_deleted_and_a_deletion_releases_every_file() {
        let with_files = service()
            .put_file(None, None, file('a'), FilePolicy::Replaceable, None, at(1))
            .unwrap()
            .component
            .put_file(
                Some(arm()),
                None,
                file('b'),
                FilePolicy::Replaceable,
                None,
                at(2),
            )
            .unwrap()
            .component;
        assert_eq!(
            with_files
                .deletion(FilePolicy::Replaceable, vec!["production".into()])
                .err(),
            Some(Refusal::Aliased {
                key: with_files.key.clone(),
                aliases: vec!["production".into()],
            })
        );
        let deletion = with_files
            .deletion(FilePolicy::Replaceable, Vec::new())
            .unwrap();
        assert_eq!(deletion.released, [file('a'), file('b')]);
        assert_eq!(deletion.event.event_type, EventType::Deleted);
    }

    #[test]
    fn every_write_moves_the_revision_and_a_write_as_of_an_old_one_is_refused() {
        let created = service();
        assert_eq!(created.revision, 0);
        let put = created
            .put_file(
                None,
                None,
                file('a'),
                FilePolicy::Replaceable,
                Some(0),
                at(1),
            )
            .unwrap()
            .component;
        assert_eq!(put.revision, 1);
        let noop: SpecUpdate = Box::new(|_| Ok(()));
        let stale = put.apply_update(&noop, Some(0), at(2));
        assert_eq!(
            stale.err(),
            Some(UpdateError::Refused(Refusal::Stale {
                key: put.key.clone(),
                expected: 0,
                actual: 1,
            }))
        );
        let updated = put.apply_update(&noop, Some(1), at(2)).unwrap().component;
        assert_eq!(updated.revision, 2);
        assert!(updated.lock(Some(1)).is_err());
        let (locked, _) = updated.lock(Some(2)).unwrap().unwrap();
        assert_eq!(locked.revision, 3);
        let marked = locked.with_alias_mark("production", true).unwrap();
        assert_eq!(marked.revision, 4);
        assert!(
            marked.with_alias_mark("production", true).is_none(),
            "marked already"
        );
        assert!(
            put.apply_update(&noop, None, at(3)).is_ok(),
            "without an expected revision, the write is unconditional"
        );
    }
}
