//! One file of a filesystem as a byte source, so that a layer can be read
//! out of a file of the tree (a mailbox inside a guest's home folder).

use std::io;
use std::sync::Arc;

use crate::fs::{FileSystem, NodeId};
use crate::ReadAt;

/// The data of file `node` of `fs`, `size` bytes long.
pub struct NodeSource {
    fs: Arc<dyn FileSystem>,
    node: NodeId,
    size: u64,
}

impl NodeSource {
    pub fn new(fs: Arc<dyn FileSystem>, node: NodeId, size: u64) -> NodeSource {
        NodeSource { fs, node, size }
    }
}

impl ReadAt for NodeSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = crate::readat::clamp_len(self.size, offset, buf.len());
        if len == 0 {
            return Ok(0);
        }
        self.fs
            .read(self.node, offset, &mut buf[..len])
            .map_err(|e| io::Error::other(e.to_string()))
    }
}
