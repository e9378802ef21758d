//! Content-addressed blob files: `blobs/<first two hex digits>/<sha256>`.

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
        let valid = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| self.root.join(&sha256[..2]).join(sha256))
    }

    /// Moves a fsynced temporary file into place, atomically. When the same bytes are already stored the temporary
    /// file is dropped instead: identical content is kept once.
    pub fn place(&self, sha256: &str, temp: TempPath) -> io::Result<()> {
        let dest = self
            .path_of(sha256)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a sha256 digest"))?;
        if dest.exists() {
            return Ok(());
        }
        let parent = dest.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(parent)?;
        temp.persist(&dest).map_err(|e| e.error)?;
        // The rename is durable only once the directory entry is on disk.
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
