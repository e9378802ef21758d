//! Zero-copy downloads. The embedded store hands a page-cached stretch of a blob to hyper as [`Bytes`] backed by a
//! read-only mapping of the file ([`map`]); the connection (`server::send_idle`) recognises a write of such bytes
//! ([`lookup`]) and sends them with sendfile(2) from the file, as nginx does, instead of copying them through
//! userspace twice. Whatever else reads those `Bytes` (another transport, a test calling the router in-process)
//! reads the mapping: the same bytes.
//!
//! Mapping a file is safe here because blobs are never written in place: they are placed whole by a rename and
//! removed by an unlink, and a mapping of an unlinked file stays valid. (A file truncated behind the server's back
//! would fault a reader of the mapping; sendfile itself then sends nothing and the connection ends.)

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Bytes of downloads sent by sendfile(2) since the process started (`/metrics`:
/// `repository_download_sendfile_bytes_total`).
pub fn sent_bytes() -> u64 {
    SENT.load(Ordering::Relaxed)
}

static SENT: AtomicU64 = AtomicU64::new(0);
/// How many mappings are registered: writes skip the registry's lock while there are none.
static MAPPED: AtomicUsize = AtomicUsize::new(0);
/// Every live mapping, by its first address.
static REGIONS: Mutex<BTreeMap<usize, Region>> = Mutex::new(BTreeMap::new());

struct Region {
    len: usize,
    file: Arc<File>,
    /// Where in the file the mapping starts.
    offset: u64,
    /// The mapping reaches the end of the stream it belongs to (the response's last file bytes).
    last: bool,
}

/// A write that sendfile(2) can make: `len` bytes of `file` from `offset`.
pub struct Sendable {
    file: Arc<File>,
    offset: u64,
    len: usize,
    ends_stream: bool,
}

impl Sendable {
    /// Whether these bytes end the stream that was mapped (see [`map`]'s `stream_end`): until they go out, more of
    /// the file follows on the same connection.
    pub fn ends_stream(&self) -> bool {
        self.ends_stream
    }
}

/// The file stretch that `slice`'s bytes are a mapping of, if they are one of ours.
pub fn lookup(slice: &[u8]) -> Option<Sendable> {
    if slice.is_empty() || MAPPED.load(Ordering::Acquire) == 0 {
        return None;
    }
    let start = slice.as_ptr() as usize;
    let regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
    let (&base, region) = regions.range(..=start).next_back()?;
    let inside = start - base;
    (inside + slice.len() <= region.len).then(|| Sendable {
        file: Arc::clone(&region.file),
        offset: region.offset + inside as u64,
        len: slice.len(),
        ends_stream: region.last && inside + slice.len() == region.len,
    })
}

/// Sets or lifts TCP_CORK on `socket`: while set, the kernel sends only full segments (nginx's `tcp_nopush`), so
/// the partial one that ends each sendfile(2) waits for the next, or for the cork to be lifted.
pub fn set_cork(socket: &impl std::os::fd::AsRawFd, on: bool) -> std::io::Result<()> {
    sys::set_cork(socket.as_raw_fd(), on)
}

/// The bytes of `file` from `offset` that the page cache holds without a gap, up to `len`, as [`Bytes`] that the
/// connection sends with sendfile(2) (which on a runtime thread must never wait for the disk); `None` when that is
/// fewer than `at_least` or the mapping fails, and the caller reads them the ordinary way. A page the kernel dropped
/// (memory pressure, proactive reclaim) thus costs the download one ordinary read where it lies, not the copy of
/// the whole stretch around it. `stream_end` is where in the file the stream these bytes belong to ends: the
/// connection keeps its socket corked across the stretches before it (see `server::send_idle`).
pub fn map(
    file: &Arc<File>,
    offset: u64,
    len: usize,
    at_least: usize,
    stream_end: u64,
) -> Option<Bytes> {
    sys::map(file, offset, len, at_least, stream_end).map(Bytes::from_owner)
}

#[cfg(target_os = "linux")]
mod sys {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::{MAPPED, REGIONS, Region, SENT, Sendable};

    /// A read-only shared mapping of a file stretch, registered while it lives.
    pub struct Mapping {
        base: *mut libc::c_void,
        map_len: usize,
        /// The bytes asked for start this far into the mapping (mappings start on a page).
        skip: usize,
    }

    // SAFETY: the mapping is read-only and owned by this value alone; reading it from any thread is sound.
    unsafe impl Send for Mapping {}
    unsafe impl Sync for Mapping {}

    impl AsRef<[u8]> for Mapping {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: `base..base + map_len` is mapped readable for as long as `self` lives.
            unsafe {
                std::slice::from_raw_parts(
                    (self.base as *const u8).add(self.skip),
                    self.map_len - self.skip,
                )
            }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // Unregistered first: no write may find the addresses once another mapping can reuse them.
            let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
            if regions.remove(&(self.base as usize)).is_some() {
                MAPPED.fetch_sub(1, Ordering::Release);
            }
            drop(regions);
            // SAFETY: the mapping is ours and nothing refers to it any more.
            unsafe { libc::munmap(self.base, self.map_len) };
        }
    }

    fn page_size() -> usize {
        // SAFETY: sysconf only reads a system value.
        match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            size if size > 0 => size as usize,
            _ => 4096,
        }
    }

    pub fn map(
        file: &Arc<File>,
        offset: u64,
        len: usize,
        at_least: usize,
        stream_end: u64,
    ) -> Option<Mapping> {
        if len == 0 {
            return None;
        }
        let page = page_size() as u64;
        let start = offset - offset % page;
        let skip = (offset - start) as usize;
        let map_len = skip + len;
        // SAFETY: a fresh read-only mapping chosen by the kernel; nothing else is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                start as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let mut mapping = Mapping {
            base,
            map_len,
            skip,
        };
        // One cachestat answers for the common case, a stretch cached whole; else mincore finds the first gap.
        let cached_len = match cached_pages(file, start, map_len as u64) {
            Some(cached) if cached == map_len.div_ceil(page as usize) as u64 => map_len,
            _ => resident_prefix(&mapping, page as usize),
        };
        if cached_len < skip + at_least.max(1) {
            // Dropped unregistered: the Drop impl finds nothing to remove and unmaps.
            return None;
        }
        if cached_len < map_len {
            // SAFETY: the tail of our own mapping, from a page boundary; nothing refers to it yet.
            unsafe {
                libc::munmap(
                    base.cast::<u8>().add(cached_len).cast(),
                    map_len - cached_len,
                )
            };
            mapping.map_len = cached_len;
        }
        let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
        regions.insert(
            base as usize,
            Region {
                len: mapping.map_len,
                file: Arc::clone(file),
                offset: start,
                last: start + mapping.map_len as u64 >= stream_end,
            },
        );
        MAPPED.fetch_add(1, Ordering::Release);
        Some(mapping)
    }

    pub fn set_cork(socket: std::os::fd::RawFd, on: bool) -> io::Result<()> {
        let value: libc::c_int = on.into();
        // SAFETY: an int option on an open socket, passed by pointer and size for the call's duration.
        let done = unsafe {
            libc::setsockopt(
                socket,
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// cachestat(2)'s system call number, the same on every architecture (Linux 6.5 and later).
    const SYS_CACHESTAT: libc::c_long = 451;

    #[repr(C)]
    struct CachestatRange {
        offset: u64,
        len: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Cachestat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }

    /// How many pages of `len` bytes of `file` from `offset` (a page boundary) the page cache holds, by one
    /// cachestat(2), which walks the cache's tree once; `None` where the kernel lacks it. (mincore(2), the
    /// fallback, looks each page up afresh: it took 15 % of the server's CPU on 4-stream downloads.)
    fn cached_pages(file: &File, offset: u64, len: u64) -> Option<u64> {
        let range = CachestatRange { offset, len };
        let mut stat = Cachestat::default();
        // SAFETY: both structs are `repr(C)` as the kernel defines them and live across the call; flags must be 0.
        let done = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const CachestatRange,
                &mut stat as *mut Cachestat,
                0,
            )
        };
        (done == 0).then_some(stat.cache)
    }

    /// How many bytes from the start of `mapping` the page cache holds without a gap, by mincore(2): a page
    /// boundary, or the whole mapping.
    fn resident_prefix(mapping: &Mapping, page: usize) -> usize {
        let mut resident = vec![0u8; mapping.map_len.div_ceil(page)];
        // SAFETY: `resident` has one byte per page of the mapping, as mincore requires.
        let asked = unsafe { libc::mincore(mapping.base, mapping.map_len, resident.as_mut_ptr()) };
        if asked != 0 {
            return 0;
        }
        resident
            .iter()
            .position(|page| page & 1 == 0)
            .map_or(mapping.map_len, |gap| gap * page)
    }

    impl Sendable {
        /// The bytes one [`Sendable::send`] asks for: fewer sent means the socket's buffer filled up.
        pub fn asked(&self) -> usize {
            // sendfile moves at most this much in one call.
            self.len.min(0x7fff_f000)
        }

        /// One sendfile(2) to `socket` (non-blocking): the bytes sent, or `WouldBlock` when its buffer is full. 0
        /// means the file ended early (it was truncated): the caller's write fails with `WriteZero`.
        pub fn send(&self, socket: &impl AsRawFd) -> io::Result<usize> {
            let mut offset = self.offset as libc::off_t;
            let count = self.asked();
            // SAFETY: both descriptors are open (the file is held by `self`); `offset` is ours.
            let sent = unsafe {
                libc::sendfile(
                    socket.as_raw_fd(),
                    self.file.as_raw_fd(),
                    &mut offset,
                    count,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            SENT.fetch_add(sent as u64, Ordering::Relaxed);
            Ok(sent as usize)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::fs::File;
    use std::sync::Arc;

    pub struct Mapping;

    impl AsRef<[u8]> for Mapping {
        fn as_ref(&self) -> &[u8] {
            &[]
        }
    }

    pub fn map(_: &Arc<File>, _: u64, _: usize, _: usize, _: u64) -> Option<Mapping> {
        None
    }

    pub fn set_cork(_: std::os::fd::RawFd, _: bool) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    impl super::Sendable {
        pub fn asked(&self) -> usize {
            self.len
        }

        pub fn send(&self, _: &impl std::os::fd::AsRawFd) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn mapped_bytes_are_the_file_s_and_are_found_while_they_live() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let file = Arc::new(file);
        let bytes = map(&file, 5000, 200_000, 1, 205_000).expect("a page-cached file maps");
        assert_eq!(&bytes[..], &data[5000..205_000]);
        let found = lookup(&bytes[100..300]).expect("a slice of a mapping is found");
        assert_eq!((found.offset, found.len), (5100, 200));
        assert!(
            !found.ends_stream(),
            "more of the stream follows this slice"
        );
        assert!(
            lookup(&bytes[300..]).unwrap().ends_stream(),
            "the rest of the mapping ends the stream"
        );
        assert!(lookup(&data[..10]).is_none(), "other memory is not");

        let first = map(&file, 0, 100_000, 1, 250_000).expect("maps");
        assert!(
            !lookup(&first).unwrap().ends_stream(),
            "the stream goes on after this stretch"
        );
        let rest = map(&file, 100_000, 150_000, 1, 250_000).expect("maps");
        assert!(
            lookup(&rest).unwrap().ends_stream(),
            "a range that ends mid-file ends with it"
        );
    }

    /// The first page of `len` bytes of `file` from `offset` (a page boundary) that the page cache lacks, asked the
    /// other way (mincore of a mapping of its own, not cachestat), as a byte offset from `offset`.
    fn first_dropped(file: &File, offset: usize, len: usize) -> Option<usize> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(file);
        // SAFETY: a fresh read-only mapping of our file, unmapped below; mincore writes one byte per page.
        let resident = unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            );
            assert_ne!(base, libc::MAP_FAILED);
            let mut resident = vec![0u8; len.div_ceil(4096)];
            assert_eq!(libc::mincore(base, len, resident.as_mut_ptr()), 0);
            libc::munmap(base, len);
            resident
        };
        resident
            .iter()
            .position(|page| page & 1 == 0)
            .map(|page| page * 4096)
    }

    /// A synced file on the disk's file system (tmpfs pages never leave the cache).
    fn on_disk(data: &[u8]) -> Arc<File> {
        let mut file = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        file.write_all(data).unwrap();
        file.sync_all().unwrap();
        Arc::new(file)
    }

    #[test]
    fn a_stretch_with_dropped_pages_is_mapped_up_to_the_first_of_them() {
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let file = on_disk(&data);
        // Dropped from 2 MiB on: the kernel drops whole folios, and these may be that large.
        let advised = 2 << 20;
        rustix::fs::fadvise(&*file, advised as u64, None, rustix::fs::Advice::DontNeed)
            .expect("advice taken");
        let gap = match first_dropped(&file, 0, data.len()) {
            Some(gap) if gap > 100 + 4096 => gap,
            _ => {
                eprintln!(
                    "SKIPPED a_stretch_with_dropped_pages_is_mapped_up_to_the_first_of_them: this file system kept \
                     the pages advised with POSIX_FADV_DONTNEED, or dropped the file's start too"
                );
                return;
            }
        };
        let bytes = map(&file, 100, data.len() - 100, 4096, data.len() as u64)
            .expect("the cached prefix maps");
        assert_eq!(
            bytes.len(),
            gap - 100,
            "up to the first missing page, not beyond"
        );
        assert!(
            !lookup(&bytes).unwrap().ends_stream(),
            "the stream goes on past the gap"
        );
        assert_eq!(&bytes[..], &data[100..gap]);
        let found = lookup(&bytes[bytes.len() - 10..]).expect("its end is still ours");
        assert_eq!((found.offset, found.len), (gap as u64 - 10, 10));
        assert!(
            map(&file, 100, data.len() - 100, gap, data.len() as u64).is_none(),
            "a prefix shorter than asked for is not mapped"
        );
        assert!(
            map(&file, gap as u64, 4 * 4096, 1, data.len() as u64).is_none(),
            "a stretch that starts at a missing page is read the ordinary way"
        );
    }

    #[test]
    fn a_file_the_page_cache_dropped_is_not_mapped() {
        let data = vec![7u8; 1 << 20];
        let file = on_disk(&data);
        assert!(
            map(&file, 0, data.len(), 1, data.len() as u64).is_some(),
            "written, it is cached"
        );
        rustix::fs::fadvise(&*file, 0, None, rustix::fs::Advice::DontNeed).expect("advice taken");
        if first_dropped(&file, 0, data.len()).is_none() {
            eprintln!(
                "SKIPPED a_file_the_page_cache_dropped_is_not_mapped: this file system kept the pages after \
                 POSIX_FADV_DONTNEED"
            );
            return;
        }
        assert!(
            map(&file, 0, data.len(), 1, data.len() as u64).is_none(),
            "dropped from the cache (synced pages are clean), it is read the ordinary way"
        );
    }
}
