//! Content-addressed blob files: `blobs/<first two hex digits>/<sha256>`.

use crate::domain::Sha256;
use crate::store::{LocalBlob, new_staging_file};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempPath};

/// The directory that holds every stored file, named by its sha256, and the staging directory its files are
/// written in before they are renamed into it.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
    staging: PathBuf,
}

impl BlobDir {
    pub fn new(root: PathBuf, staging: PathBuf) -> Self {
        Self { root, staging }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives; `None` for anything that is not a sha256 in lower-case hex, so that
    /// a damaged record can never make us open a path outside the directory.
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        Sha256::parse(sha256).ok().map(|digest| self.path(&digest))
    }

    pub fn path(&self, digest: &Sha256) -> PathBuf {
        let text = digest.as_str();
        self.root.join(&text[..2]).join(text)
    }

    /// Moves a staged blob into place, atomically, and makes its bytes and its name durable; bytes held in memory
    /// are written to a staging file first. When the same bytes are already stored the staged ones are dropped
    /// instead (identical content is kept once), and the stored file is synced all the same: the upload that placed
    /// it may not have synced it yet.
    ///
    /// The rename comes before the syncs: on a journaling file system the file's sync then commits the rename with
    /// the bytes, and the directory's sync finds nothing left to do, so an upload waits for one journal commit
    /// instead of two. A crash in between leaves a blob that no record refers to, removed at the next start-up.
    pub fn place(&self, sha256: &str, blob: LocalBlob) -> io::Result<()> {
        let dest = self.destination(sha256)?;
        self.put(&dest, || match blob {
            LocalBlob::File(temp) => Ok(temp),
            LocalBlob::Memory(held) => self
                .staged_copy(held.bytes())
                .map(NamedTempFile::into_temp_path),
        })?;
        std::fs::File::open(&dest)?.sync_data()?;
        sync_dir(dest.parent().expect("blob paths have a parent"))
    }

    /// Moves `bytes` into place as the blob `sha256` without syncing them (see [`super::journal`], which makes
    /// them durable by other means); nothing is written when the same bytes are already stored.
    pub fn place_unsynced(&self, sha256: &str, bytes: &[u8]) -> io::Result<()> {
        let dest = self.destination(sha256)?;
        self.put(&dest, || {
            self.staged_copy(bytes).map(NamedTempFile::into_temp_path)
        })
    }

    /// Writes `bytes` as the blob `sha256` through a synced staging file renamed over whatever is there, and
    /// syncs its directory: how a journalled blob is restored after a crash.
    pub fn write_durably(&self, sha256: &str, bytes: &[u8]) -> io::Result<()> {
        let dest = self.destination(sha256)?;
        self.make_shard(&dest)?;
        let file = self.staged_copy(bytes)?;
        file.as_file().sync_data()?;
        file.persist(&dest).map_err(|e| e.error)?;
        sync_dir(dest.parent().expect("blob paths have a parent"))
    }

    /// [`Self::path_of`], refusing anything that is not a digest.
    fn destination(&self, sha256: &str) -> io::Result<PathBuf> {
        self.path_of(sha256)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a sha256 digest"))
    }

    /// Renames the file `staged` gives to `dest`, unless the same bytes are there already: then `staged` is dropped
    /// without being called (a staged file with it).
    fn put(&self, dest: &Path, staged: impl FnOnce() -> io::Result<TempPath>) -> io::Result<()> {
        if dest.exists() {
            return Ok(());
        }
        let temp = staged()?;
        // A new shard directory's own name must be durable too.
        self.make_shard(dest)?;
        temp.persist(dest).map_err(|e| e.error)
    }

    /// A new staging file holding `bytes`, not synced.
    fn staged_copy(&self, bytes: &[u8]) -> io::Result<NamedTempFile> {
        let mut file = new_staging_file(&self.staging)?;
        file.write_all(bytes)?;
        Ok(file)
    }

    /// Creates the shard directory of `dest` if it is missing, its name durable.
    fn make_shard(&self, dest: &Path) -> io::Result<()> {
        let parent = dest.parent().expect("blob paths have a parent");
        if !parent.exists() {
            std::fs::create_dir_all(parent)?;
            sync_dir(&self.root)?;
        }
        Ok(())
    }

    pub fn remove(&self, sha256: &str) -> io::Result<()> {
        match self.path_of(sha256).map(std::fs::remove_file) {
            Some(Err(e)) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every blob digest on disk.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut digests = Vec::new();
        for shard in std::fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let name = entry?.file_name();
                if let Some(name) = name.to_str().filter(|n| self.path_of(n).is_some()) {
                    digests.push(name.to_owned());
                }
            }
        }
        Ok(digests)
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes everything in the staging directory: uploads that a crash or a kill interrupted.
pub fn clear_dir(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path, bytes: &[u8]) -> LocalBlob {
        let mut file = tempfile::NamedTempFile::new_in(dir).expect("a temporary file");
        std::io::Write::write_all(&mut file, bytes).expect("written");
        LocalBlob::File(file.into_temp_path())
    }

    #[test]
    fn placing_moves_the_file_under_its_digest_and_keeps_identical_bytes_once() {
        let root = tempfile::tempdir().expect("a directory");
        let (tmp, blobs) = (
            root.path().join("tmp"),
            BlobDir::new(root.path().join("blobs"), root.path().join("tmp")),
        );
        std::fs::create_dir_all(&tmp).expect("tmp");
        std::fs::create_dir_all(root.path().join("blobs")).expect("blobs");
        let digest = "ab".repeat(32);

        blobs
            .place(&digest, staged(&tmp, b"first"))
            .expect("placed");
        let path = blobs.path_of(&digest).expect("a digest");
        assert_eq!(std::fs::read(&path).expect("stored"), b"first");

        // The same digest again: the stored file stays, the new temporary file is removed.
        blobs
            .place(&digest, staged(&tmp, b"second"))
            .expect("placed again");
        assert_eq!(std::fs::read(&path).expect("stored"), b"first");
        assert_eq!(
            std::fs::read_dir(&tmp).expect("tmp").count(),
            0,
            "no staged file is left behind"
        );
        assert_eq!(blobs.list().expect("listed"), vec![digest]);
    }

    #[test]
    fn a_name_that_is_not_a_digest_is_refused_and_its_file_removed() {
        let root = tempfile::tempdir().expect("a directory");
        let blobs = BlobDir::new(root.path().join("blobs"), root.path().join("tmp"));
        let error = blobs
            .place("../escape", staged(root.path(), b"x"))
            .expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::read_dir(root.path()).expect("root").count(), 0);
    }

    #[test]
    fn bytes_held_in_memory_are_placed_through_a_staging_file_and_give_their_budget_back() {
        let root = tempfile::tempdir().expect("a directory");
        let tmp = root.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let blobs = BlobDir::new(root.path().join("blobs"), tmp.clone());
        let budget = crate::store::MemoryBudget::new(4096);
        let digest = "cd".repeat(32);

        let held = budget.hold(&[7u8; 3000]).expect("room for 3 KiB");
        assert!(budget.hold(&[7u8; 2000]).is_none(), "3 of 4 KiB are held");
        blobs
            .place(&digest, LocalBlob::Memory(held))
            .expect("placed");
        let path = blobs.path_of(&digest).expect("a digest");
        assert_eq!(std::fs::read(&path).expect("stored"), vec![7u8; 3000]);
        assert_eq!(std::fs::read_dir(&tmp).expect("tmp").count(), 0);
        assert!(
            budget.hold(&[7u8; 4096]).is_some(),
            "placing gave the budget back"
        );

        // The same bytes again are not written at all.
        let again = budget.hold(&[8u8; 10]).expect("room");
        blobs
            .place(&digest, LocalBlob::Memory(again))
            .expect("placed again");
        assert_eq!(std::fs::read(&path).expect("stored"), vec![7u8; 3000]);
        assert_eq!(std::fs::read_dir(&tmp).expect("tmp").count(), 0);
    }
}
