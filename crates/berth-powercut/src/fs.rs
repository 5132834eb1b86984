//! The FUSE side: namespace operations pass straight through to the backing
//! directory, file contents go through [`FileImage`]s until an fsync writes
//! them back. One lock guards all state and every operation holds it from
//! start to finish, so a power cut falls between two operations, never
//! inside one.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::image::{FileImage, ImageError};
use crate::{CutReport, OpCounts};

/// How long the kernel may cache attributes: not at all, so a size that a
/// power cut took back is never served from the kernel's cache.
const ATTR_TTL_MS: u64 = 0;
const ATTR_TTL: Duration = Duration::from_millis(ATTR_TTL_MS);
/// How long the kernel may cache a name-to-inode mapping: not at all either.
const ENTRY_TTL_MS: u64 = 0;
const ENTRY_TTL: Duration = Duration::from_millis(ENTRY_TTL_MS);
/// The unit of `st_blocks`.
const STAT_BLOCK_BYTES: u64 = 512;
/// The permission bits of a mode (no file type bits).
const PERMISSION_BITS: u32 = 0o7777;
/// FUSE's inode number of the mount's root.
const ROOT_INO: u64 = INodeNo::ROOT.0;
/// File handles start here; 0 is what a handle-less request carries.
const FIRST_FILE_HANDLE: u64 = 1;

/// A file as the backing filesystem identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BackingInode {
    dev: u64,
    ino: u64,
}

impl BackingInode {
    fn of(meta: &Metadata) -> BackingInode {
        BackingInode { dev: meta.dev(), ino: meta.ino() }
    }
}

/// What the filesystem knows of one inode it handed to the kernel.
#[derive(Debug)]
struct Node {
    /// Path relative to the backing directory; `None` once unlinked.
    path: Option<PathBuf>,
    backing: BackingInode,
    open_files: usize,
}

/// An open file: the backing file opened read-write when allowed, so an
/// fsync through any handle (even a read-only one) can write the image back.
#[derive(Debug)]
struct OpenFile {
    ino: u64,
    file: File,
    writable: bool,
    append: bool,
    sync_writes: bool,
}

/// A directory listing taken at opendir, so readdir offsets stay valid
/// while the directory changes.
#[derive(Debug)]
struct DirListing {
    ino: u64,
    kind: FileType,
    name: OsString,
}

/// Everything one lock guards.
#[derive(Debug)]
pub(crate) struct State {
    root: PathBuf,
    nodes: HashMap<u64, Node>,
    ino_by_backing: HashMap<BackingInode, u64>,
    next_ino: u64,
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, Vec<DirListing>>,
    next_fh: u64,
    /// Unsynced (or not yet dropped) contents, keyed by FUSE inode so a
    /// rename keeps a file's image with the file.
    images: HashMap<u64, FileImage>,
    counts: OpCounts,
}

/// State shared by the mounted filesystem and the test's handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// The errno every changing operation fails with; 0 when none is set.
    injected_errno: AtomicI32,
}

impl Shared {
    pub(crate) fn new(root: PathBuf, root_meta: &Metadata) -> Shared {
        let backing = BackingInode::of(root_meta);
        let root_node = Node { path: Some(PathBuf::new()), backing, open_files: 0 };
        let state = State {
            root,
            nodes: HashMap::from([(ROOT_INO, root_node)]),
            ino_by_backing: HashMap::from([(backing, ROOT_INO)]),
            next_ino: ROOT_INO + 1,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: FIRST_FILE_HANDLE,
            images: HashMap::new(),
            counts: OpCounts::default(),
        };
        Shared { state: Mutex::new(state), injected_errno: AtomicI32::new(0) }
    }

    pub(crate) fn set_injected_errno(&self, errno: Option<i32>) {
        // 0 means "none" here, and FUSE cannot carry a negative errno.
        let stored = errno.map_or(0, |code| if code > 0 { code } else { libc::EIO });
        self.injected_errno.store(stored, Ordering::SeqCst);
    }

    fn refuse_if_injected(&self) -> Result<(), Errno> {
        match self.injected_errno.load(Ordering::SeqCst) {
            0 => Ok(()),
            code => Err(Errno::from_i32(code)),
        }
    }

    pub(crate) fn cut_power(&self) -> CutReport {
        let mut state = self.state.lock();
        let mut report = CutReport::default();
        for image in state.images.values().filter(|image| image.is_dirty()) {
            report.files += 1;
            report.bytes += image.unsynced_bytes();
        }
        state.images.clear();
        state.counts.power_cuts += 1;
        report
    }

    pub(crate) fn op_counts(&self) -> OpCounts {
        self.state.lock().counts
    }
}

impl From<ImageError> for Errno {
    fn from(err: ImageError) -> Errno {
        match err {
            ImageError::TooLarge => Errno::EFBIG,
            ImageError::Io(err) => Errno::from(err),
        }
    }
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(u64::from(nanos)),
    }
}

fn file_kind(file_type: fs::FileType) -> FileType {
    FileType::from_std(file_type).unwrap_or(FileType::RegularFile)
}

fn resolve_time(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Reads up to `size` bytes at `offset`, short only at end of file.
fn read_at_most(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; size];
    let mut filled = 0;
    while filled < size {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Opens a backing file read-write when the backing filesystem allows it,
/// otherwise with the access the caller asked for. Creation and truncation
/// flags are never passed on: truncation goes through the image.
fn open_backing(path: &Path, flags: OpenFlags) -> io::Result<(File, bool)> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(read_write_err) => {
            let access = flags.0 & libc::O_ACCMODE;
            if access == libc::O_RDWR {
                return Err(read_write_err);
            }
            let writable = access == libc::O_WRONLY;
            let file = OpenOptions::new().read(!writable).write(writable).open(path)?;
            Ok((file, writable))
        }
    }
}

/// The metadata changes of one setattr call.
struct AttrChanges {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

impl State {
    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn rel_path(&self, ino: u64) -> Result<&Path, Errno> {
        self.node(ino)?.path.as_deref().ok_or(Errno::ENOENT)
    }

    fn full_path(&self, ino: u64) -> Result<PathBuf, Errno> {
        Ok(self.root.join(self.rel_path(ino)?))
    }

    fn child_rel(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel_path(parent)?.join(name))
    }

    fn take_fh(&mut self) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        fh
    }

    /// The FUSE inode of a backing file, made on first sight; records the
    /// path it was just seen under.
    fn ino_for(&mut self, meta: &Metadata, rel: PathBuf) -> u64 {
        let backing = BackingInode::of(meta);
        if let Some(&ino) = self.ino_by_backing.get(&backing) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = Some(rel);
                return ino;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node { path: Some(rel), backing, open_files: 0 });
        self.ino_by_backing.insert(backing, ino);
        ino
    }

    fn any_open_file(&self, ino: u64) -> Option<&OpenFile> {
        self.files.values().find(|open| open.ino == ino)
    }

    /// The handle's file, else any open file of the inode.
    fn open_file_of(&self, ino: u64, fh: Option<u64>) -> Option<&OpenFile> {
        fh.and_then(|fh| self.files.get(&fh)).filter(|open| open.ino == ino).or_else(|| self.any_open_file(ino))
    }

    /// Attributes as a reader sees them: size and mtime from the image when
    /// there is one, everything else from the backing file.
    fn attr(&self, ino: u64, meta: &Metadata) -> FileAttr {
        let image = self.images.get(&ino);
        let size = image.map_or(meta.len(), FileImage::len);
        let changed = image.map(FileImage::modified);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: image.map_or(meta.blocks(), |_| size.div_ceil(STAT_BLOCK_BYTES)),
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: changed.unwrap_or_else(|| system_time(meta.mtime(), meta.mtime_nsec())),
            ctime: changed.unwrap_or_else(|| system_time(meta.ctime(), meta.ctime_nsec())),
            crtime: UNIX_EPOCH,
            kind: file_kind(meta.file_type()),
            perm: u16::try_from(meta.mode() & PERMISSION_BITS).unwrap_or(0),
            nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: u32::try_from(meta.rdev()).unwrap_or(0),
            blksize: u32::try_from(meta.blksize()).unwrap_or(u32::MAX),
            flags: 0,
        }
    }

    fn metadata(&self, ino: u64, fh: Option<u64>) -> Result<Metadata, Errno> {
        if let Some(open) = fh.and_then(|fh| self.files.get(&fh)).filter(|open| open.ino == ino) {
            return Ok(open.file.metadata()?);
        }
        match &self.node(ino)?.path {
            Some(rel) => Ok(fs::symlink_metadata(self.root.join(rel))?),
            None => Ok(self.any_open_file(ino).ok_or(Errno::ENOENT)?.file.metadata()?),
        }
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let rel = self.child_rel(parent, name)?;
        let meta = fs::symlink_metadata(self.root.join(&rel))?;
        let ino = self.ino_for(&meta, rel);
        Ok(self.attr(ino, &meta))
    }

    /// The file's image, loaded from the backing file on first use.
    fn image_mut(&mut self, ino: u64, fh: Option<u64>) -> Result<&mut FileImage, Errno> {
        if !self.images.contains_key(&ino) {
            let image = match self.open_file_of(ino, fh) {
                Some(open) => FileImage::load(&open.file)?,
                None => FileImage::load(&File::open(self.full_path(ino)?)?)?,
            };
            self.images.insert(ino, image);
        }
        Ok(self.images.get_mut(&ino).expect("the image of this inode was inserted above"))
    }

    /// Writes the file's unsynced changes to the backing file.
    fn persist(&mut self, ino: u64) -> Result<(), Errno> {
        let State { root, nodes, files, images, .. } = self;
        let Some(image) = images.get_mut(&ino).filter(|image| image.is_dirty()) else {
            return Ok(());
        };
        match files.values().find(|open| open.ino == ino && open.writable) {
            Some(open) => image.persist(&open.file)?,
            None => {
                let rel = nodes.get(&ino).and_then(|node| node.path.as_deref()).ok_or(Errno::EBADF)?;
                image.persist(&OpenOptions::new().write(true).open(root.join(rel))?)?;
            }
        }
        Ok(())
    }

    /// A name of the backing file `meta` describes is gone. When it was the
    /// last one, the file's unsynced contents go too (nothing can reach
    /// them) and its inode is freed once no handle uses it.
    fn forget_name(&mut self, meta: &Metadata) {
        let Some(&ino) = self.ino_by_backing.get(&BackingInode::of(meta)) else {
            return;
        };
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        // A later lookup of another name restores the path.
        node.path = None;
        let last_name = meta.is_dir() || meta.nlink() <= 1;
        if !last_name {
            return;
        }
        let unused = node.open_files == 0;
        self.ino_by_backing.remove(&node.backing);
        self.images.remove(&ino);
        if unused {
            self.nodes.remove(&ino);
        }
    }

    /// Moves every known path under `from` to under `to`.
    fn move_paths(&mut self, from: &Path, to: &Path) {
        for node in self.nodes.values_mut() {
            let moved = node.path.as_deref().and_then(|path| path.strip_prefix(from).ok()).map(|rest| {
                // `join("")` would add a trailing slash, which a file path must not have.
                if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                }
            });
            if moved.is_some() {
                node.path = moved;
            }
        }
    }

    fn register_open_file(&mut self, ino: u64, file: File, writable: bool, flags: OpenFlags) -> u64 {
        let fh = self.take_fh();
        let append = flags.0 & libc::O_APPEND != 0;
        // O_SYNC includes the O_DSYNC bit.
        let sync_writes = flags.0 & libc::O_DSYNC != 0;
        self.files.insert(fh, OpenFile { ino, file, writable, append, sync_writes });
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open_files += 1;
        }
        fh
    }

    fn open(&mut self, ino: u64, flags: OpenFlags) -> Result<u64, Errno> {
        let (file, writable) = match &self.node(ino)?.path {
            Some(rel) => open_backing(&self.root.join(rel), flags)?,
            None => {
                let open = self.any_open_file(ino).ok_or(Errno::ENOENT)?;
                (open.file.try_clone()?, open.writable)
            }
        };
        self.counts.opens += 1;
        Ok(self.register_open_file(ino, file, writable, flags))
    }

    fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> Result<(FileAttr, u64), Errno> {
        let rel = self.child_rel(parent, name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(mode & !umask & PERMISSION_BITS);
        if flags.0 & libc::O_EXCL != 0 {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options.open(self.root.join(&rel))?;
        let meta = file.metadata()?;
        let ino = self.ino_for(&meta, rel);
        let fh = self.register_open_file(ino, file, true, flags);
        self.counts.creates += 1;
        // The file existed after all: truncate it like any other data change.
        if flags.0 & libc::O_TRUNC != 0 && meta.len() > 0 {
            self.image_mut(ino, Some(fh))?.set_len(0)?;
        }
        Ok((self.attr(ino, &meta), fh))
    }

    fn release(&mut self, fh: u64) {
        let Some(open) = self.files.remove(&fh) else {
            return;
        };
        let ino = open.ino;
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.open_files = node.open_files.saturating_sub(1);
        if node.open_files > 0 {
            return;
        }
        // Still reachable by a name unless its last one was removed.
        let named = self.ino_by_backing.get(&node.backing) == Some(&ino);
        if !named {
            self.nodes.remove(&ino);
            self.images.remove(&ino);
        } else if self.images.get(&ino).is_some_and(|image| !image.is_dirty()) {
            // A clean image equals the backing file; keep memory to open files.
            self.images.remove(&ino);
        }
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let size = usize::try_from(size).map_err(|_| Errno::EINVAL)?;
        if let Some(image) = self.images.get(&ino) {
            return Ok(image.read(offset, size).to_vec());
        }
        let open = self.files.get(&fh).ok_or(Errno::EBADF)?;
        Ok(read_at_most(&open.file, offset, size)?)
    }

    fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8], flags: OpenFlags) -> Result<u32, Errno> {
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let open = self.files.get(&fh).ok_or(Errno::EBADF)?;
        let append = open.append || flags.0 & libc::O_APPEND != 0;
        let sync_write = open.sync_writes || flags.0 & libc::O_DSYNC != 0;
        let image = self.image_mut(ino, Some(fh))?;
        let offset = if append { image.len() } else { offset };
        image.write(offset, data)?;
        self.counts.writes += 1;
        self.counts.bytes_written += u64::from(written);
        if sync_write {
            // An O_SYNC/O_DSYNC write is acknowledged as durable.
            self.counts.sync_writes += 1;
            self.persist(ino)?;
        }
        Ok(written)
    }

    fn set_attr(&mut self, ino: u64, fh: Option<u64>, changes: AttrChanges) -> Result<FileAttr, Errno> {
        if let Some(size) = changes.size {
            self.image_mut(ino, fh)?.set_len(size)?;
            self.counts.truncates += 1;
        }
        let ownership = changes.uid.is_some() || changes.gid.is_some();
        let times = changes.atime.is_some() || changes.mtime.is_some();
        if changes.mode.is_some() || ownership || times {
            let meta = self.metadata(ino, fh)?;
            if meta.file_type().is_symlink() {
                // Linux has no mode for a link, and times on one are not supported here.
                if changes.mode.is_some() || times {
                    return Err(Errno::from_i32(libc::EOPNOTSUPP));
                }
                std::os::unix::fs::lchown(self.full_path(ino)?, changes.uid, changes.gid)?;
            } else {
                let target = match self.open_file_of(ino, fh) {
                    Some(open) => open.file.try_clone()?,
                    // O_NONBLOCK: opening a FIFO must not wait for a writer.
                    None => OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(self.full_path(ino)?)?,
                };
                if let Some(mode) = changes.mode {
                    target.set_permissions(Permissions::from_mode(mode & PERMISSION_BITS))?;
                }
                if ownership {
                    std::os::unix::fs::fchown(&target, changes.uid, changes.gid)?;
                }
                if times {
                    let mut file_times = FileTimes::new();
                    if let Some(atime) = changes.atime {
                        file_times = file_times.set_accessed(resolve_time(atime));
                    }
                    if let Some(mtime) = changes.mtime {
                        file_times = file_times.set_modified(resolve_time(mtime));
                    }
                    target.set_times(file_times)?;
                }
            }
        }
        let meta = self.metadata(ino, fh)?;
        Ok(self.attr(ino, &meta))
    }

    fn allocate(&mut self, ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        self.counts.fallocates += 1;
        if mode == KEEP_SIZE {
            // Reserves space only: nothing a reader sees changes.
            return Ok(());
        }
        let (zero, keep_size) = match mode {
            0 => (false, false),
            m if m == PUNCH_HOLE | KEEP_SIZE => (true, true),
            m if m == ZERO_RANGE => (true, false),
            m if m == ZERO_RANGE | KEEP_SIZE => (true, true),
            _ => return Err(Errno::from_i32(libc::EOPNOTSUPP)),
        };
        let image = self.image_mut(ino, Some(fh))?;
        if zero {
            image.zero_range(offset, length)?;
        }
        if !keep_size && end > image.len() {
            image.set_len(end)?;
        }
        Ok(())
    }

    fn make_node(&mut self, parent: u64, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr, Errno> {
        // Only regular files: the tests have no use for devices, FIFOs or sockets.
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        let rel = self.child_rel(parent, name)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & !umask & PERMISSION_BITS)
            .open(self.root.join(&rel))?;
        let meta = file.metadata()?;
        let ino = self.ino_for(&meta, rel);
        self.counts.creates += 1;
        Ok(self.attr(ino, &meta))
    }

    fn make_dir(&mut self, parent: u64, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr, Errno> {
        let rel = self.child_rel(parent, name)?;
        let path = self.root.join(&rel);
        fs::DirBuilder::new().mode(mode & !umask & PERMISSION_BITS).create(&path)?;
        let meta = fs::symlink_metadata(&path)?;
        let ino = self.ino_for(&meta, rel);
        Ok(self.attr(ino, &meta))
    }

    fn make_symlink(&mut self, parent: u64, name: &OsStr, target: &Path) -> Result<FileAttr, Errno> {
        let rel = self.child_rel(parent, name)?;
        let path = self.root.join(&rel);
        std::os::unix::fs::symlink(target, &path)?;
        let meta = fs::symlink_metadata(&path)?;
        let ino = self.ino_for(&meta, rel);
        Ok(self.attr(ino, &meta))
    }

    fn remove(&mut self, parent: u64, name: &OsStr, is_dir: bool) -> Result<(), Errno> {
        let path = self.root.join(self.child_rel(parent, name)?);
        let meta = fs::symlink_metadata(&path)?;
        if is_dir {
            fs::remove_dir(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        self.forget_name(&meta);
        self.counts.unlinks += 1;
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let from_rel = self.child_rel(parent, name)?;
        let to_rel = self.child_rel(new_parent, new_name)?;
        let (from, to) = (self.root.join(&from_rel), self.root.join(&to_rel));
        let replaced = match fs::symlink_metadata(&to) {
            Ok(meta) => Some(meta),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err.into()),
        };
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && replaced.is_some() {
            return Err(Errno::EEXIST);
        }
        let moved = fs::symlink_metadata(&from)?;
        fs::rename(&from, &to)?;
        if let Some(replaced) = replaced.filter(|replaced| BackingInode::of(replaced) != BackingInode::of(&moved)) {
            self.forget_name(&replaced);
        }
        self.move_paths(&from_rel, &to_rel);
        self.counts.renames += 1;
        Ok(())
    }

    fn open_dir(&mut self, ino: u64) -> Result<u64, Errno> {
        let rel = self.rel_path(ino)?.to_path_buf();
        let path = self.root.join(&rel);
        let parent_ino = match rel.parent() {
            Some(parent_rel) if ino != ROOT_INO => {
                let meta = fs::symlink_metadata(self.root.join(parent_rel))?;
                self.ino_for(&meta, parent_rel.to_path_buf())
            }
            _ => ROOT_INO,
        };
        let mut listing = vec![
            DirListing { ino, kind: FileType::Directory, name: ".".into() },
            DirListing { ino: parent_ino, kind: FileType::Directory, name: "..".into() },
        ];
        for entry in fs::read_dir(&path)? {
            let entry = entry?;
            // Gone since the listing was read: leave it out.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let name = entry.file_name();
            let child = self.ino_for(&meta, rel.join(&name));
            listing.push(DirListing { ino: child, kind: file_kind(meta.file_type()), name });
        }
        let fh = self.take_fh();
        self.dirs.insert(fh, listing);
        Ok(fh)
    }
}

/// The `fuser` filesystem; all of its state is in [`Shared`].
#[derive(Debug)]
pub(crate) struct PowerCutFilesystem {
    shared: Arc<Shared>,
}

impl PowerCutFilesystem {
    pub(crate) fn new(shared: Arc<Shared>) -> PowerCutFilesystem {
        PowerCutFilesystem { shared }
    }

    /// Runs an operation that changes data or metadata: refused while an
    /// errno is injected.
    fn changing<T>(&self, op: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        self.shared.refuse_if_injected()?;
        op(&mut self.shared.state.lock())
    }

    /// Runs an operation that changes nothing on disk (reads, lookups,
    /// opens), which keeps working while an errno is injected.
    fn non_changing<T>(&self, op: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        op(&mut self.shared.state.lock())
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry_with_ttls(&ATTR_TTL, &ENTRY_TTL, &attr, Generation(0)),
        Err(err) => reply.error(err),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(err),
    }
}

fn reply_attr(reply: ReplyAttr, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.attr(&ATTR_TTL, &attr),
        Err(err) => reply.error(err),
    }
}

impl Filesystem for PowerCutFilesystem {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.non_changing(|state| state.lookup(parent.0, name)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.non_changing(|state| {
            let meta = state.metadata(ino.0, fh.map(|fh| fh.0))?;
            Ok(state.attr(ino.0, &meta))
        });
        reply_attr(reply, result);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = AttrChanges { mode, uid, gid, size, atime, mtime };
        reply_attr(reply, self.changing(|state| state.set_attr(ino.0, fh.map(|fh| fh.0), changes)));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.non_changing(|state| Ok(fs::read_link(state.full_path(ino.0)?)?)) {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(err) => reply.error(err),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.changing(|state| state.make_node(parent.0, name, mode, umask)));
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        reply_entry(reply, self.changing(|state| state.make_dir(parent.0, name, mode, umask)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.changing(|state| state.remove(parent.0, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.changing(|state| state.remove(parent.0, name, true)));
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        reply_entry(reply, self.changing(|state| state.make_symlink(parent.0, link_name, target)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.changing(|state| state.rename(parent.0, name, newparent.0, newname, flags)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.non_changing(|state| state.open(ino.0, flags)) {
            // Direct I/O: the kernel keeps no page cache that could outlive a cut.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(err) => reply.error(err),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.non_changing(|state| state.read(ino.0, fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(err) => reply.error(err),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.changing(|state| state.write(ino.0, fh.0, offset, data, flags)) {
            Ok(written) => reply.written(written),
            Err(err) => reply.error(err),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Called on every close(): persisting here would make a killed
        // process's unsynced writes durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.state.lock().release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let result = self.changing(|state| {
            if datasync {
                state.counts.fdatasyncs += 1;
            } else {
                state.counts.fsyncs += 1;
            }
            // Any handle of the file syncs the file, as on a real filesystem.
            state.persist(ino.0)
        });
        reply_empty(reply, result);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.non_changing(|state| state.open_dir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(err) => reply.error(err),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = self.shared.state.lock();
        let Some(listing) = state.dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in listing.iter().enumerate().skip(skip) {
            // The offset the kernel passes back to continue after this entry.
            let next_offset = index as u64 + 1;
            if reply.add(INodeNo(entry.ino), next_offset, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.shared.state.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory entries are durable at once in this model: nothing to write.
        let result = self.changing(|state| {
            state.counts.dir_fsyncs += 1;
            Ok(())
        });
        reply_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let root = self.shared.state.lock().root.clone();
        match nix::sys::statvfs::statvfs(&root) {
            Ok(stat) => reply.statfs(
                stat.blocks(),
                stat.blocks_free(),
                stat.blocks_available(),
                stat.files(),
                stat.files_free(),
                u32::try_from(stat.block_size()).unwrap_or(u32::MAX),
                u32::try_from(stat.name_max()).unwrap_or(u32::MAX),
                u32::try_from(stat.fragment_size()).unwrap_or(u32::MAX),
            ),
            Err(errno) => reply.error(Errno::from_i32(errno as i32)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.changing(|state| state.create(parent.0, name, mode, umask, OpenFlags(flags))) {
            Ok((attr, fh)) => {
                reply.created(&ATTR_TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(err) => reply.error(err),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.changing(|state| state.allocate(ino.0, fh.0, offset, length, mode)));
    }
}
