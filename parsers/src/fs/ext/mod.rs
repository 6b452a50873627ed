//! Placeholder until the ext adapter lands: refuses every volume.

use std::ffi::{OsStr, OsString};

use crate::fs::{DirEntry, FileSystem, FsInfo, NodeId, Stat};
use crate::{Error, Result, Source};

/// The ext adapter.
pub struct ExtFs;

impl ExtFs {
    /// Opens the filesystem on `src`.
    pub fn open(_src: Source) -> Result<Self> {
        Err(Error::unsupported("ext", "reader not built yet"))
    }
}

impl FileSystem for ExtFs {
    fn info(&self) -> FsInfo {
        FsInfo::default()
    }
    fn root(&self) -> NodeId {
        0
    }
    fn lookup(&self, _dir: NodeId, _name: &OsStr) -> Result<Option<NodeId>> {
        Err(Error::unsupported("ext", "reader not built yet"))
    }
    fn read_dir(&self, _dir: NodeId) -> Result<Vec<DirEntry>> {
        Err(Error::unsupported("ext", "reader not built yet"))
    }
    fn stat(&self, _node: NodeId) -> Result<Stat> {
        Err(Error::unsupported("ext", "reader not built yet"))
    }
    fn read(&self, _node: NodeId, _offset: u64, _buf: &mut [u8]) -> Result<usize> {
        Err(Error::unsupported("ext", "reader not built yet"))
    }
    fn read_link(&self, _node: NodeId) -> Result<OsString> {
        Err(Error::unsupported("ext", "reader not built yet"))
    }
    fn xattrs(&self, _node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        Err(Error::unsupported("ext", "reader not built yet"))
    }
}
