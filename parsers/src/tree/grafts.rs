//! Filesystems grafted into the tree beside or below a node of another:
//! the items of a file (`PATH#`) and the deleted files of a volume
//! (`$Deleted`).
//!
//! A graft is found again by where it hangs (the host node and the name it
//! hangs under), so one `PATH#` is opened once per tree and keeps one
//! index, hence one set of inode numbers, for the tree's life. Grafts are
//! made on first use (a lookup or a listing), never in advance, and the
//! table is bounded ([`MAX_GRAFTS`]): a tree of hostile nested items cannot
//! grow it without end.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, RwLock};

use crate::fs::FileSystem;
use crate::{Error, Result};

use super::Node;

/// Most filesystems one tree grafts (items opened, `$Deleted` views).
pub const MAX_GRAFTS: usize = 4096;

/// One grafted filesystem.
pub struct Graft {
    pub fs: Arc<dyn FileSystem>,
    /// The node it hangs below or beside.
    pub host: Node,
    /// Its name in the host's directory (`inbox.pst#`, `$Deleted`).
    pub name: OsString,
    /// The volume it was read from, for warnings and statfs.
    pub volume: usize,
    /// What it is, for messages: `items of inbox.pst (pst)`.
    pub what: String,
}

/// Where a graft hangs: its host node and name. `None` as the fs marks
/// a name that was tried and is not an item, so it is not tried again.
type Key = (Node, OsString);

/// The grafts of one tree.
#[derive(Default)]
pub struct Grafts {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    list: Vec<Arc<Graft>>,
    by_key: HashMap<Key, Option<usize>>,
}

impl Grafts {
    /// Graft `i`.
    pub fn get(&self, i: usize) -> Option<Arc<Graft>> {
        self.read().list.get(i).cloned()
    }

    /// What is known of `(host, name)`: `Some(Some(i))` graft `i`,
    /// `Some(None)` tried and nothing to graft, `None` not tried yet.
    pub fn known(&self, host: Node, name: &OsStr) -> Option<Option<usize>> {
        self.read().by_key.get(&(host, name.to_owned())).copied()
    }

    /// Grafts what `make` opens at `(host, name)` unless it was tried
    /// already; returns its index, or `None` when `make` found nothing.
    /// `make` runs without the lock held (it reads the image).
    pub fn get_or_make(
        &self,
        host: Node,
        name: &OsStr,
        make: impl FnOnce() -> Result<Option<Graft>>,
    ) -> Result<Option<usize>> {
        if let Some(known) = self.known(host, name) {
            return Ok(known);
        }
        let made = make()?;
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let key = (host, name.to_owned());
        // Another thread may have made it meanwhile: keep the first.
        if let Some(&known) = inner.by_key.get(&key) {
            return Ok(known);
        }
        let index = match made {
            None => None,
            Some(_) if inner.list.len() >= MAX_GRAFTS => {
                return Err(Error::unsupported(
                    "tree",
                    format!("more than {MAX_GRAFTS} items and views opened in one tree"),
                ))
            }
            Some(g) => {
                inner.list.push(Arc::new(g));
                Some(inner.list.len() - 1)
            }
        };
        inner.by_key.insert(key, index);
        Ok(index)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}
