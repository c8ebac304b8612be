//! Reading whole segment files for the verifier, with as few fresh pages as possible.
//!
//! Filling new memory costs the kernel a page fault per 4 KiB, about three times the copy
//! from the page cache; the verifier therefore reuses its two segment buffers and fills a new
//! one with two threads.

use std::fs;
use std::path::Path;

/// Reads a whole file into `buf`, reusing its capacity.
pub(crate) fn read_into(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    let mut file = fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if buf.capacity() < len && len >= PARALLEL_FILL_BYTES {
        if let Ok(filled) = fill_in_halves(&file, len) {
            *buf = filled;
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

/// Files this large are read into a new buffer by two threads.
const PARALLEL_FILL_BYTES: usize = 4 << 20;

/// The first `len` bytes of `file` in a new buffer, each half read by its own thread. The
/// kernel's faults on new pages cost three times the copy, and before the first segment is in
/// memory nothing else runs. Fails when the file is shorter than `len`.
fn fill_in_halves(file: &fs::File, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    // Zeroed pages come from the allocator untouched; only the reads fault them in.
    let mut data = vec![0u8; len];
    let half = len / 2;
    let (a, b) = data.split_at_mut(half);
    std::thread::scope(|s| {
        let second = s.spawn(|| file.read_exact_at(b, half as u64));
        let first = file.read_exact_at(a, 0);
        let second = second
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")));
        first.and(second)
    })?;
    Ok(data)
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
        assert!(fill_in_halves(&file, PARALLEL_FILL_BYTES).is_err());
        assert!(read_into(&dir.path().join("missing"), &mut Vec::new()).is_err());
    }
}
