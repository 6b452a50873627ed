use std::ffi::OsString;

/// A filesystem's own stable id for a node: inode or MFT record number.
pub type NodeId = u64;

/// The kind of a node, as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileType {
    /// The `S_IF*` bits of `st_mode`.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::File => 0o100000,
            FileType::Dir => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
        }
    }

    /// The name used in manifests and `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
            FileType::CharDevice => "chardev",
            FileType::BlockDevice => "blockdev",
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch (negative before 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timespec {
    pub secs: i64,
    pub nanos: u32,
}

/// What `stat` says of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub node: NodeId,
    pub kind: FileType,
    pub size: u64,
    /// Permission bits only (`0o7777`); the type is in `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Device number of a device node (`makedev(major, minor)`), else 0.
    pub rdev: u64,
    /// Bytes the file occupies on disk.
    pub allocated: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    /// Creation time, where the filesystem keeps one.
    pub crtime: Option<Timespec>,
}

impl Stat {
    /// A node of a filesystem without owners, link counts or permissions
    /// (FAT, exFAT): root-owned, one link, `0755` for directories, files
    /// `0444` when read-only else `0644`; `allocated` rounds `size` up to
    /// whole clusters of `cluster` bytes. The root directory of those has
    /// no times.
    pub fn dos(node: NodeId, dir: bool, read_only: bool, size: u64, cluster: u64) -> Stat {
        let (kind, mode) = match (dir, read_only) {
            (true, _) => (FileType::Dir, 0o755),
            (false, true) => (FileType::File, 0o444),
            (false, false) => (FileType::File, 0o644),
        };
        Stat {
            node,
            kind,
            size,
            mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            rdev: 0,
            allocated: size.div_ceil(cluster.max(1)).saturating_mul(cluster.max(1)),
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            crtime: None,
        }
    }
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    pub node: NodeId,
    pub kind: FileType,
}

/// A filesystem's identity and usage.
#[derive(Debug, Clone, Default)]
pub struct FsInfo {
    /// `ntfs`, `ext4`, ...
    pub kind: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub block_size: u32,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub total_nodes: u64,
    pub free_nodes: u64,
    /// Anything the reader noticed but read through (for `info`).
    pub warnings: Vec<String>,
}

/// A subvolume or snapshot of a filesystem that has them (Btrfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subvolume {
    /// The filesystem's id of it (Btrfs: 256 and up).
    pub id: u64,
    /// Where it shows from the volume's root (`@/home`), `None` if it is
    /// linked nowhere (being deleted).
    pub path: Option<OsString>,
    /// Transaction of its last change.
    pub generation: u64,
    pub read_only: bool,
    /// Whether it is what a plain `mount` shows (`btrfs subvolume set-default`).
    pub default: bool,
    pub uuid: Option<String>,
}
