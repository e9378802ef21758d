//! Content-addressed blob files: `blobs/<first two hex digits>/<sha256>`.

use crate::domain::Sha256;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempPath;

/// The directory that holds every stored file, named by its sha256.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
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

    /// Moves a temporary file into place, atomically, and makes its bytes and its name durable. When the same
    /// bytes are already stored the temporary file is dropped instead (identical content is kept once), and the
    /// stored file is synced all the same: the upload that placed it may not have synced it yet.
    ///
    /// The rename comes before the syncs: on a journaling file system the file's sync then commits the rename with
    /// the bytes, and the directory's sync finds nothing left to do, so an upload waits for one journal commit
    /// instead of two. A crash in between leaves a blob that no record refers to, removed at the next start-up.
    pub fn place(&self, sha256: &str, temp: TempPath) -> io::Result<()> {
        let dest = self
            .path_of(sha256)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a sha256 digest"))?;
        let parent = dest.parent().expect("blob paths have a parent");
        if dest.exists() {
            drop(temp);
        } else {
            if !parent.exists() {
                std::fs::create_dir_all(parent)?;
                // A new shard directory's own name must be durable too.
                sync_dir(&self.root)?;
            }
            temp.persist(&dest).map_err(|e| e.error)?;
        }
        std::fs::File::open(&dest)?.sync_data()?;
        sync_dir(parent)
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

    fn staged(dir: &Path, bytes: &[u8]) -> TempPath {
        let mut file = tempfile::NamedTempFile::new_in(dir).expect("a temporary file");
        std::io::Write::write_all(&mut file, bytes).expect("written");
        file.into_temp_path()
    }

    #[test]
    fn placing_moves_the_file_under_its_digest_and_keeps_identical_bytes_once() {
        let root = tempfile::tempdir().expect("a directory");
        let (tmp, blobs) = (
            root.path().join("tmp"),
            BlobDir::new(root.path().join("blobs")),
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
        let blobs = BlobDir::new(root.path().join("blobs"));
        let error = blobs
            .place("../escape", staged(root.path(), b"x"))
            .expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::read_dir(root.path()).expect("root").count(), 0);
    }
}
