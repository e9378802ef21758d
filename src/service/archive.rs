//! Moving everything between stores: `dump` to one portable archive, `restore` from it, and `import` straight
//! from another store (a database the original service wrote).
//!
//! The archive is a plain tar file, so ordinary tools can look inside:
//! - `components.jsonl`: one component per line (key, metadata, timestamps, file record), kinds in order;
//! - `aliases.jsonl` (since version 2): one model alias per line, where it points and its whole history;
//! - `blobs/<sha256>`: each distinct file once (default files and per-platform variants), named by its hash;
//! - `manifest.json`, last: format and version, the number of components, and the sha256 and size of every other
//!   entry. A truncated archive has no manifest, so it is refused.
//!
//! Dumps are deterministic (entries in listing order, fixed tar headers): dumping a restored store gives the same
//! bytes. Restore reads and verifies the whole archive into a scratch directory before it writes anything to the
//! store, and refuses to overwrite components that already exist.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use crate::domain::{AliasRecord, Component, ComponentFilter, Kind};
use crate::store::{PageRequest, StagedFiles, Store, StoreError};

const FORMAT: &str = "component-repository-archive";
/// 2 carries variants' bytes and aliases; 1 (default files only) is still read.
const VERSION: u32 = 2;
const COMPONENTS: &str = "components.jsonl";
const ALIASES: &str = "aliases.jsonl";
const MANIFEST: &str = "manifest.json";
const BLOBS: &str = "blobs/";
const PAGE: usize = 100;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("the archive is not usable: {0}")]
    Invalid(String),
    #[error("the archive could not be read or written: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} already exists in the target store: restore and import only add components")]
    Exists(String),
}

fn invalid(message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(message.into())
}

/// What moved, for the summary line and for progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub components: u64,
    pub files: u64,
    pub bytes: u64,
    /// The change-feed sequence the archive was taken at (device dumps record it; see [`dump_for_devices`]).
    pub sequence: Option<u64>,
}

/// Told about each component and each chunk of bytes as they move.
pub trait Progress: Send + Sync {
    fn component(&self) {}
    fn bytes(&self, _n: u64) {}
}

/// No progress to show.
pub struct Quiet;
impl Progress for Quiet {}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    components: u64,
    /// Entry name -> (sha256, size) of every entry but the manifest.
    entries: BTreeMap<String, Entry>,
    /// The source's change-feed sequence when the components were read (device dumps only, so that full dumps
    /// stay deterministic): where an edge mirror restored from the archive follows its upstream's feed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    sha256: String,
    size: u64,
}

/// Every component of `store`, kinds in order, each kind in listing order.
async fn all_components(store: &dyn Store) -> Result<Vec<Component>, StoreError> {
    let mut all = Vec::new();
    for kind in Kind::ALL {
        let mut after = None;
        loop {
            let page = store
                .components()
                .list(
                    kind,
                    &ComponentFilter::default(),
                    PageRequest {
                        after: after.clone(),
                        limit: PAGE,
                        count: false,
                    },
                )
                .await?;
            after = page.items.last().map(|c| c.key.sort_key());
            all.extend(page.items);
            if !page.has_next {
                break;
            }
        }
    }
    Ok(all)
}

/// Whether `store` holds no component at all.
pub async fn is_empty(store: &dyn Store) -> Result<bool, StoreError> {
    for kind in Kind::ALL {
        let page = store
            .components()
            .list(
                kind,
                &ComponentFilter::default(),
                PageRequest {
                    after: None,
                    limit: 1,
                    count: false,
                },
            )
            .await?;
        if !page.items.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A tar header that does not depend on when or by whom the archive was made.
fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn entry(self) -> Entry {
        Entry {
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArchiveError::Io(io::Error::other(e)))?
}

/// Writes every component and file of `store` to a new archive at `out`. The archive appears at `out` only when
/// complete (it is written beside it and renamed).
pub async fn dump(
    store: &dyn Store,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Tally, ArchiveError> {
    dump_selected(store, out, progress, None).await
}

/// Like [`dump`], with only what one of `devices` can run and the models those components reference, for a site
/// with no link; the archive records the feed's sequence for an edge mirror restored from it.
pub async fn dump_for_devices(
    store: &dyn Store,
    out: &Path,
    progress: &dyn Progress,
    devices: &[crate::domain::Device],
) -> Result<Tally, ArchiveError> {
    dump_selected(store, out, progress, Some(devices)).await
}

async fn dump_selected(
    store: &dyn Store,
    out: &Path,
    progress: &dyn Progress,
    devices: Option<&[crate::domain::Device]>,
) -> Result<Tally, ArchiveError> {
    // Taken before reading: changes made while dumping are applied again from the feed, harmlessly.
    let sequence = match devices {
        Some(_) => Some(store.feed().last_sequence().await?),
        None => None,
    };
    let mut components = all_components(store).await?;
    if let Some(devices) = devices {
        components = super::mirror::for_devices(components, devices);
    }
    // Files inherited from the original service may have no hash recorded yet: the archive names files by hash.
    for component in &mut components {
        if let Some(file) = component.file.as_mut().filter(|f| f.sha256.is_empty()) {
            let mut stream = store
                .blobs()
                .read(&component.key, file, 0..file.size)
                .await?;
            let mut hasher = Sha256::new();
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk.map_err(StoreError::Io)?);
            }
            file.sha256 = hex::encode(hasher.finalize());
        }
    }
    let partial = partial_path(out);
    let mut tally = Tally {
        sequence,
        ..Tally::default()
    };
    let mut manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        components: components.len() as u64,
        entries: BTreeMap::new(),
        sequence,
    };

    let mut lines = Vec::new();
    for component in &components {
        // Stores locate files their own way (a hash, a GridFS id): in the archive a file is its blob entry.
        let mut portable = component.clone();
        for file in portable.files_mut() {
            file.blob_id = file.sha256.clone();
        }
        // A version's alias marks follow from the alias records; a revision counts the writes of one store and
        // starts again in the store the archive is restored into.
        portable.aliases.clear();
        portable.revision = 0;
        serde_json::to_writer(&mut lines, &portable).map_err(io::Error::other)?;
        lines.push(b'\n');
    }
    let mut alias_lines = Vec::new();
    for record in store.aliases().alias_records().await? {
        serde_json::to_writer(&mut alias_lines, &record).map_err(io::Error::other)?;
        alias_lines.push(b'\n');
    }
    let builder = {
        let partial = partial.clone();
        blocking(move || {
            let mut builder = tar::Builder::new(BufWriter::new(File::create(&partial)?));
            let mut entries = Vec::new();
            for (name, data) in [(COMPONENTS, &lines), (ALIASES, &alias_lines)] {
                let mut reader = Hashing::new(data.as_slice());
                builder.append_data(&mut header(data.len() as u64), name, &mut reader)?;
                entries.push((name, reader.entry()));
            }
            Ok((builder, entries))
        })
        .await
    };
    let (mut builder, entries) = builder.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    for (name, entry) in entries {
        manifest.entries.insert(name.into(), entry);
    }

    let result: Result<(), ArchiveError> = async {
        for component in &components {
            progress.component();
            tally.components += 1;
            for file in component.files() {
                let name = format!("{BLOBS}{}", file.sha256);
                if manifest.entries.contains_key(&name) {
                    continue;
                }
                let stream = store
                    .blobs()
                    .read(&component.key, file, 0..file.size)
                    .await?;
                let reader = SyncIoBridge::new(StreamReader::new(stream));
                let (size, expected) = (file.size, file.sha256.clone());
                let (returned, entry) = blocking(move || {
                    let mut reader = Hashing::new(reader);
                    builder.append_data(&mut header(size), &name, &mut reader)?;
                    Ok((builder, reader.entry()))
                })
                .await?;
                builder = returned;
                if entry.sha256 != expected || entry.size != size {
                    return Err(invalid(format!(
                        "the stored file of {} does not match its recorded sha256 and size",
                        component.key
                    )));
                }
                progress.bytes(size);
                tally.files += 1;
                tally.bytes += size;
                manifest.entries.insert(format!("{BLOBS}{expected}"), entry);
            }
        }
        let manifest = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        blocking(move || {
            builder.append_data(
                &mut header(manifest.len() as u64),
                MANIFEST,
                manifest.as_slice(),
            )?;
            let file = builder
                .into_inner()?
                .into_inner()
                .map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(())
        })
        .await
    }
    .await;
    match result {
        Ok(()) => {
            std::fs::rename(&partial, out)?;
            Ok(tally)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// An archive read back and verified in a scratch directory.
struct Unpacked {
    dir: tempfile::TempDir,
    components: Vec<Component>,
    aliases: Vec<AliasRecord>,
    sequence: Option<u64>,
}

impl Unpacked {
    fn blob(&self, sha256: &str) -> PathBuf {
        self.dir.path().join("blobs").join(sha256)
    }
}

/// Reads every entry of the archive into `scratch`, hashing each, and checks all of it against the manifest.
fn unpack(archive: &Path, scratch: &Path) -> Result<Unpacked, ArchiveError> {
    let dir = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(scratch)?;
    std::fs::create_dir(dir.path().join("blobs"))?;
    let mut tar = tar::Archive::new(BufReader::new(File::open(archive)?));
    let mut seen: HashMap<String, Entry> = HashMap::new();
    let mut manifest: Option<Manifest> = None;
    let damaged = |e: io::Error| invalid(format!("the archive is truncated or damaged: {e}"));
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        if manifest.is_some() {
            return Err(invalid("entries follow the manifest"));
        }
        let name = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(damaged)?;
            manifest = Some(
                serde_json::from_slice(&text)
                    .map_err(|e| invalid(format!("the manifest is not valid: {e}")))?,
            );
            continue;
        }
        let target = if name == COMPONENTS || name == ALIASES {
            dir.path().join(&name)
        } else if let Some(sha) = name.strip_prefix(BLOBS)
            && crate::domain::Sha256::parse(sha).is_ok()
        {
            dir.path().join("blobs").join(sha)
        } else {
            return Err(invalid(format!("unexpected entry {name:?}")));
        };
        let declared = entry.header().size().map_err(damaged)?;
        let mut reader = Hashing::new(&mut entry);
        let mut out = BufWriter::new(File::create(&target)?);
        io::copy(&mut reader, &mut out).map_err(damaged)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let hashed = reader.entry();
        if hashed.size != declared {
            return Err(invalid(format!("the archive is truncated in {name}")));
        }
        if let Some(sha) = name.strip_prefix(BLOBS)
            && hashed.sha256 != sha
        {
            return Err(invalid(format!(
                "{name} does not hold the bytes its name says"
            )));
        }
        seen.insert(name, hashed);
    }
    let manifest =
        manifest.ok_or_else(|| invalid("the manifest is missing: the archive is truncated"))?;
    if manifest.format != FORMAT || !(1..=VERSION).contains(&manifest.version) {
        return Err(invalid(format!(
            "unsupported archive format {} version {}",
            manifest.format, manifest.version
        )));
    }
    for (name, expected) in &manifest.entries {
        match seen.get(name) {
            Some(found) if found == expected => {}
            Some(_) => return Err(invalid(format!("{name} does not match the manifest"))),
            None => return Err(invalid(format!("{name} is missing"))),
        }
    }
    if seen.len() != manifest.entries.len() {
        return Err(invalid(
            "the archive holds entries the manifest does not list",
        ));
    }
    let mut components = Vec::new();
    for line in BufReader::new(File::open(dir.path().join(COMPONENTS))?).lines() {
        let line = line?;
        let mut component: Component = serde_json::from_str(&line)
            .map_err(|e| invalid(format!("a component is not valid: {e}")))?;
        if manifest.version < 2 {
            // Version 1 listed variants and alias marks without their bytes or records: it moves default files.
            component.variants.clear();
            component.aliases.clear();
        }
        // Keys are checked as the API checks them: an archive is input like any request.
        component
            .key
            .validate()
            .map_err(|e| invalid(format!("a component key is not valid: {e}")))?;
        component
            .spec
            .validate()
            .map_err(|e| invalid(format!("{}: {e}", component.key)))?;

        for file in component.files() {
            let blob = manifest.entries.get(&format!("{BLOBS}{}", file.sha256));
            if blob.is_none_or(|b| b.size != file.size) {
                return Err(invalid(format!(
                    "a file of {} is not in the archive",
                    component.key
                )));
            }
        }
        components.push(component);
    }
    let mut aliases = Vec::new();
    if manifest.entries.contains_key(ALIASES) {
        for line in BufReader::new(File::open(dir.path().join(ALIASES))?).lines() {
            let record: AliasRecord = serde_json::from_str(&line?)
                .map_err(|e| invalid(format!("an alias is not valid: {e}")))?;
            crate::domain::validate_alias(&record.alias)
                .map_err(|e| invalid(format!("an alias is not valid: {e}")))?;
            if let Some(version) = &record.version {
                let named = components.iter().any(|c| {
                    matches!(&c.key, crate::domain::ComponentKey::Model(m)
                        if m.name == record.model && &m.version == version)
                });
                if !named {
                    return Err(invalid(format!(
                        "alias {} of model {} names version {version}, which the archive does not hold",
                        record.alias, record.model
                    )));
                }
            }
            aliases.push(record);
        }
    }
    if components.len() as u64 != manifest.components {
        return Err(invalid(
            "the number of components does not match the manifest",
        ));
    }
    Ok(Unpacked {
        dir,
        components,
        aliases,
        sequence: manifest.sequence,
    })
}

/// Adds every component of the archive at `input` to `store`. The archive is verified in full (in a scratch
/// directory under `scratch`) before the first write, and nothing is written when any of its components already
/// exists in the store.
pub async fn restore(
    store: &dyn Store,
    input: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Tally, ArchiveError> {
    let (input, scratch) = (input.to_path_buf(), scratch.to_path_buf());
    let unpacked = blocking(move || unpack(&input, &scratch)).await?;
    refuse_existing(store, &unpacked.components).await?;
    for record in &unpacked.aliases {
        if store
            .aliases()
            .alias_known(&record.model, &record.alias)
            .await?
        {
            return Err(ArchiveError::Exists(format!(
                "alias {} of model {}",
                record.alias, record.model
            )));
        }
    }
    let mut tally = Tally {
        sequence: unpacked.sequence,
        ..Tally::default()
    };
    for component in &unpacked.components {
        let mut files = StagedFiles::default();
        for (n, file) in component.files().enumerate() {
            let path = unpacked.blob(&file.sha256);
            let body = ReaderStream::new(tokio::fs::File::open(&path).await?)
                .inspect(|chunk| {
                    if let Ok(chunk) = chunk {
                        progress.bytes(chunk.len() as u64);
                    }
                })
                .boxed();
            let staged = store.blobs().stage(body, u64::MAX).await?;
            if n == 0 && component.file.is_some() {
                files.default = Some(staged);
            } else {
                files.variants.push(staged);
            }
            tally.files += 1;
            tally.bytes += file.size;
        }
        if files.default.is_some() || !files.variants.is_empty() {
            store
                .components()
                .insert_with_files(component.clone(), files)
                .await?;
        } else {
            store.components().insert(component.clone()).await?;
        }
        progress.component();
        tally.components += 1;
    }
    for record in unpacked.aliases {
        store.aliases().insert_alias(record).await?;
    }
    Ok(tally)
}

async fn refuse_existing(store: &dyn Store, components: &[Component]) -> Result<(), ArchiveError> {
    for component in components {
        if store.components().get(&component.key).await?.is_some() {
            return Err(ArchiveError::Exists(component.key.to_string()));
        }
    }
    Ok(())
}

/// Copies every component of `source` (for example a database the original service wrote, opened with the
/// MongoDB backend) into `target`, files streamed from one to the other and hashed on the way.
pub async fn import(
    source: &dyn Store,
    target: &dyn Store,
    progress: &dyn Progress,
) -> Result<Tally, ArchiveError> {
    let components = all_components(source).await?;
    refuse_existing(target, &components).await?;
    let aliases = source.aliases().alias_records().await?;
    for record in &aliases {
        if target
            .aliases()
            .alias_known(&record.model, &record.alias)
            .await?
        {
            return Err(ArchiveError::Exists(format!(
                "alias {} of model {}",
                record.alias, record.model
            )));
        }
    }
    let mut tally = Tally::default();
    for mut component in components {
        let mut files = StagedFiles::default();
        let has_default = component.file.is_some();
        for (n, file) in component
            .file
            .iter_mut()
            .chain(component.variants.iter_mut().map(|v| &mut v.file))
            .enumerate()
        {
            let body = source
                .blobs()
                .read(&component.key, file, 0..file.size)
                .await?
                .inspect(|chunk| {
                    if let Ok(chunk) = chunk {
                        progress.bytes(chunk.len() as u64);
                    }
                })
                .boxed();
            let staged = target.blobs().stage(body, u64::MAX).await?;
            if staged.size != file.size || (!file.sha256.is_empty() && staged.sha256 != file.sha256)
            {
                return Err(invalid(format!(
                    "a file of {} does not match its recorded size or sha256 in the source",
                    component.key
                )));
            }
            // Files of the original service have no hash recorded: the one just computed is it.
            file.sha256 = staged.sha256.clone();
            tally.bytes += file.size;
            tally.files += 1;
            if n == 0 && has_default {
                files.default = Some(staged);
            } else {
                files.variants.push(staged);
            }
        }
        // Alias marks come with the alias records, written last.
        component.aliases.clear();
        if files.default.is_some() || !files.variants.is_empty() {
            target
                .components()
                .insert_with_files(component, files)
                .await?;
        } else {
            target.components().insert(component).await?;
        }
        progress.component();
        tally.components += 1;
    }
    for record in aliases {
        target.aliases().insert_alias(record).await?;
    }
    Ok(tally)
}
