//! The in-memory image of one file's contents since its last fsync: the
//! bytes a reader sees, which of them were written since the last sync,
//! and how the length moved. Persisting writes only the dirty ranges and
//! the length to the backing file; discarding the image is the power cut.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

/// Largest file the filesystem holds an image of. Images live in memory,
/// so a stray write at a huge offset must fail (`EFBIG`) rather than
/// allocate it; the sled files the tests use stay far below this.
pub const MAX_FILE_LEN_BYTES: u64 = 1 << 30;

/// Byte ranges written since the last sync, as disjoint `start..end`
/// ranges keyed by start. Touching ranges are merged so a sequential
/// writer leaves one range, not one per write.
#[derive(Debug, Default)]
struct DirtyRanges {
    end_by_start: BTreeMap<usize, usize>,
}

impl DirtyRanges {
    fn insert(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // Ranges are disjoint and sorted by start, so their ends are sorted
        // too: walking back from the last range starting at or before `end`,
        // every range until the first ending before `start` overlaps or
        // touches the new one.
        let merged: Vec<(usize, usize)> = self
            .end_by_start
            .range(..=end)
            .rev()
            .take_while(|(_, &range_end)| range_end >= start)
            .map(|(&range_start, &range_end)| (range_start, range_end))
            .collect();
        for (range_start, range_end) in merged {
            self.end_by_start.remove(&range_start);
            start = start.min(range_start);
            end = end.max(range_end);
        }
        self.end_by_start.insert(start, end);
    }

    /// Forgets everything at or past `len` (the file was cut shorter).
    fn truncate(&mut self, len: usize) {
        self.end_by_start.retain(|&start, _| start < len);
        if let Some((_, end)) = self.end_by_start.range_mut(..len).next_back() {
            *end = (*end).min(len);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.end_by_start.iter().map(|(&start, &end)| (start, end))
    }

    fn total_bytes(&self) -> u64 {
        self.iter().map(|(start, end)| (end - start) as u64).sum()
    }

    fn is_empty(&self) -> bool {
        self.end_by_start.is_empty()
    }

    fn clear(&mut self) {
        self.end_by_start.clear();
    }
}

/// A file's contents as its writers see them, ahead of the backing file.
#[derive(Debug)]
pub(crate) struct FileImage {
    data: Vec<u8>,
    dirty: DirtyRanges,
    /// The backing file's length as of the load or the last sync.
    synced_len: usize,
    /// The shortest the image has been since then. Bytes of the backing
    /// file past it must read as zeros after a sync, unless rewritten.
    floor_len: usize,
    modified: SystemTime,
}

/// Why an image refused a change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("file would grow past {MAX_FILE_LEN_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Converts a file offset or length to an index into an image, refusing
/// anything past [`MAX_FILE_LEN_BYTES`].
fn checked_len(len: u64) -> Result<usize, ImageError> {
    if len > MAX_FILE_LEN_BYTES {
        return Err(ImageError::TooLarge);
    }
    usize::try_from(len).map_err(|_| ImageError::TooLarge)
}

impl FileImage {
    /// Reads the backing file's current contents into a clean image.
    pub(crate) fn load(backing: &File) -> Result<FileImage, ImageError> {
        let len = checked_len(backing.metadata()?.len())?;
        let mut data = vec![0; len];
        backing.read_exact_at(&mut data, 0)?;
        Ok(FileImage {
            data,
            dirty: DirtyRanges::default(),
            synced_len: len,
            floor_len: len,
            modified: SystemTime::now(),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub(crate) fn modified(&self) -> SystemTime {
        self.modified
    }

    /// Up to `size` bytes from `offset`; short (or empty) at the end of file.
    pub(crate) fn read(&self, offset: u64, size: usize) -> &[u8] {
        let start = usize::try_from(offset).map_or(self.data.len(), |o| o.min(self.data.len()));
        let end = start.saturating_add(size).min(self.data.len());
        &self.data[start..end]
    }

    /// Writes `bytes` at `offset`, growing the file (the gap reads as zeros).
    pub(crate) fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), ImageError> {
        let start = checked_len(offset)?;
        let end = checked_len(offset.saturating_add(bytes.len() as u64))?;
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(bytes);
        self.dirty.insert(start, end);
        self.modified = SystemTime::now();
        Ok(())
    }

    /// Truncates or extends the file; an extension reads as zeros.
    pub(crate) fn set_len(&mut self, len: u64) -> Result<(), ImageError> {
        let len = checked_len(len)?;
        // An extension needs no dirty range: it lies past `floor_len` (the
        // image never got shorter than that) or past `synced_len`, and a
        // sync leaves the backing file zeroed there.
        self.data.resize(len, 0);
        self.dirty.truncate(len);
        self.floor_len = self.floor_len.min(len);
        self.modified = SystemTime::now();
        Ok(())
    }

    /// Zeroes `length` bytes from `offset`, clipped to the file's end.
    pub(crate) fn zero_range(&mut self, offset: u64, length: u64) -> Result<(), ImageError> {
        let file_len = self.data.len();
        let start = checked_len(offset)?.min(file_len);
        let end = checked_len(offset.saturating_add(length))?.min(file_len);
        if start < end {
            self.data[start..end].fill(0);
            self.dirty.insert(start, end);
            self.modified = SystemTime::now();
        }
        Ok(())
    }

    fn length_changed(&self) -> bool {
        self.data.len() != self.synced_len || self.floor_len < self.synced_len
    }

    /// Whether a power cut now would lose anything of this file.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.length_changed()
    }

    /// Bytes written since the last sync (what a power cut now drops).
    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.dirty.total_bytes()
    }

    /// Makes the backing file equal to the image, writing only what changed,
    /// then marks the image clean. On error the image stays dirty (the
    /// backing file may hold part of the changes, as a real disk may).
    pub(crate) fn persist(&mut self, backing: &File) -> io::Result<()> {
        if self.floor_len < self.synced_len {
            // Zeroes whatever the image cut off and later regrew.
            backing.set_len(self.floor_len as u64)?;
        }
        for (start, end) in self.dirty.iter() {
            backing.write_all_at(&self.data[start..end], start as u64)?;
        }
        if self.length_changed() {
            backing.set_len(self.len())?;
        }
        self.dirty.clear();
        self.synced_len = self.data.len();
        self.floor_len = self.data.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fs::OpenOptions;

    use super::*;

    fn ranges(dirty: &DirtyRanges) -> Vec<(usize, usize)> {
        dirty.iter().collect()
    }

    #[test]
    fn dirty_ranges_merge_overlapping_and_touching_writes() {
        let mut dirty = DirtyRanges::default();
        dirty.insert(10, 20);
        dirty.insert(30, 40);
        dirty.insert(20, 25); // touches the first
        assert_eq!(ranges(&dirty), vec![(10, 25), (30, 40)]);
        dirty.insert(5, 35); // swallows both
        assert_eq!(ranges(&dirty), vec![(5, 40)]);
        dirty.insert(50, 50); // empty: ignored
        assert_eq!(ranges(&dirty), vec![(5, 40)]);
        assert_eq!(dirty.total_bytes(), 35);
    }

    #[test]
    fn dirty_ranges_truncate_clips_and_drops() {
        let mut dirty = DirtyRanges::default();
        dirty.insert(0, 10);
        dirty.insert(20, 30);
        dirty.truncate(25);
        assert_eq!(ranges(&dirty), vec![(0, 10), (20, 25)]);
        dirty.truncate(20);
        assert_eq!(ranges(&dirty), vec![(0, 10)]);
    }

    fn backing_with(contents: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, contents).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        (dir, file)
    }

    fn backing_contents(file: &File) -> Vec<u8> {
        let mut out = vec![0; usize::try_from(file.metadata().unwrap().len()).unwrap()];
        file.read_exact_at(&mut out, 0).unwrap();
        out
    }

    #[test]
    fn writes_stay_in_the_image_until_persisted() {
        let (_dir, backing) = backing_with(b"0123456789");
        let mut image = FileImage::load(&backing).unwrap();
        image.write(2, b"ab").unwrap();
        image.write(12, b"zz").unwrap();
        assert_eq!(image.read(0, 100), b"01ab456789\0\0zz");
        assert_eq!(backing_contents(&backing), b"0123456789");
        assert!(image.is_dirty());
        assert_eq!(image.unsynced_bytes(), 4);
        image.persist(&backing).unwrap();
        assert_eq!(backing_contents(&backing), b"01ab456789\0\0zz");
        assert!(!image.is_dirty());
    }

    #[test]
    fn shrink_then_regrow_persists_zeros_not_old_bytes() {
        let (_dir, backing) = backing_with(b"0123456789");
        let mut image = FileImage::load(&backing).unwrap();
        image.set_len(3).unwrap();
        image.set_len(8).unwrap();
        assert_eq!(image.read(0, 100), b"012\0\0\0\0\0");
        image.persist(&backing).unwrap();
        assert_eq!(backing_contents(&backing), b"012\0\0\0\0\0");
    }

    #[test]
    fn zero_range_is_clipped_to_the_file_and_dirty() {
        let (_dir, backing) = backing_with(b"0123456789");
        let mut image = FileImage::load(&backing).unwrap();
        image.zero_range(8, 100).unwrap();
        assert_eq!(image.len(), 10);
        image.persist(&backing).unwrap();
        assert_eq!(backing_contents(&backing), b"01234567\0\0");
    }

    #[test]
    fn writes_past_the_size_limit_fail() {
        let (_dir, backing) = backing_with(b"");
        let mut image = FileImage::load(&backing).unwrap();
        assert!(matches!(image.write(MAX_FILE_LEN_BYTES, b"x"), Err(ImageError::TooLarge)));
        assert!(matches!(image.set_len(MAX_FILE_LEN_BYTES + 1), Err(ImageError::TooLarge)));
        assert_eq!(image.len(), 0);
    }
}
