//! Reading whole segment files for the verifier, with as few fresh pages as possible.
//!
//! Filling new memory costs the kernel a page fault per 4 KiB, about three times the copy
//! from the page cache; the verifier therefore reads every segment into one buffer, with two
//! threads.

use std::fs;
use std::path::Path;

/// Reads a whole file into `buf`, reusing its memory.
pub(crate) fn read_into(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    let mut file = fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if len >= PARALLEL_FILL_BYTES {
        if buf.capacity() < len {
            // Zeroed pages come from the allocator untouched; only the reads fault them in.
            *buf = vec![0u8; len];
        } else {
            // Old bytes are overwritten, so only a longer file needs new zeros.
            buf.resize(len, 0);
        }
        if fill_in_halves(&file, buf).is_ok() {
            // Bytes appended since (a live writer) are read as a plain read would read them.
            file.seek(std::io::SeekFrom::Start(len as u64))?;
            file.read_to_end(buf)?;
            return Ok(());
        }
        file.rewind()?;
    }
    buf.clear();
    file.read_to_end(buf).map(|_| ())
}

/// Files this large are read by two threads.
const PARALLEL_FILL_BYTES: usize = 4 << 20;

/// Fills `dst` from the start of `file`, each half by its own thread: filling memory is the
/// verifier's only work until a segment is in memory. Fails when the file is shorter.
fn fill_in_halves(file: &fs::File, dst: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let half = dst.len() / 2;
    let (a, b) = dst.split_at_mut(half);
    std::thread::scope(|s| {
        let second = s.spawn(|| file.read_exact_at(b, half as u64));
        let first = file.read_exact_at(a, 0);
        let second = second
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")));
        first.and(second)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_read_the_same_into_new_and_reused_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let data: Vec<u8> = (0..PARALLEL_FILL_BYTES + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&path, &data).unwrap();
        let mut buf = Vec::new();
        read_into(&path, &mut buf).unwrap();
        assert_eq!(buf, data);
        fs::write(&path, &data[..1000]).unwrap();
        read_into(&path, &mut buf).unwrap();
        assert_eq!(buf, &data[..1000]);
        let mut small = Vec::new();
        read_into(&path, &mut small).unwrap();
        assert_eq!(small, &data[..1000]);
    }

    #[test]
    fn a_file_shorter_than_its_reported_size_is_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        fs::write(&path, b"abc").unwrap();
        let file = fs::File::open(&path).unwrap();
        assert!(fill_in_halves(&file, &mut vec![0; PARALLEL_FILL_BYTES]).is_err());
        assert!(read_into(&dir.path().join("missing"), &mut Vec::new()).is_err());
    }
}
