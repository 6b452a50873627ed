//! Walks of a directory's `$I30` B+ tree, built from the crate's node
//! readers but with our own traversal: a corrupt subnode VCN pointing back
//! up the tree would make the crate's iterator and finder loop forever, so
//! we visit every index block at most once and bound the depth.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::{Read, Seek};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileName, NtfsIndexAllocation, NtfsIndexRoot};
use ntfs::{
    Ntfs, NtfsAttributeType, NtfsFile, NtfsIndexEntry, NtfsIndexEntryFlags, NtfsIndexNodeEntries,
};

use super::ntfs_err;
use crate::{Error, Result};

/// Deeper than any real tree (a 2^32-entry directory is under 10 levels).
const MAX_DEPTH: usize = 32;
/// Index blocks are 4 KiB in practice; refuse absurd sizes before reading.
const MAX_INDEX_RECORD: u32 = 64 * 1024;
/// Most attributes (with attribute-list entries) looked at per directory.
const MAX_ATTRIBUTES: usize = 1 << 16;
/// Size of an index entry's fixed header.
const INDEX_ENTRY_HEADER: usize = 16;

type Entry<'a> = NtfsIndexEntry<'a, NtfsFileNameIndex>;

/// What a visitor wants next.
pub(crate) enum Walk {
    Continue,
    Stop,
}

struct Tree<'n, 'f> {
    alloc: Option<NtfsIndexAllocation<'n, 'f>>,
    record_size: u32,
    visited: HashSet<i64>,
}

/// Runs `f` on the `$I30` tree of directory `file`: its root node's
/// entries and a [`Tree`] to read subnodes with. The allocation may live in
/// an extension record, so attributes come from the flattened iterator.
fn with_tree<T: Read + Seek, R>(
    file: &NtfsFile,
    cur: &mut T,
    f: impl FnOnce(&mut Tree, NtfsIndexNodeEntries<NtfsFileNameIndex>, &mut T) -> Result<R>,
) -> Result<Option<R>> {
    let mut items = Vec::new();
    let mut iter = file.attributes();
    let mut seen = 0usize;
    while let Some(item) = iter.next(cur) {
        let item = item.map_err(ntfs_err)?;
        seen += 1;
        if seen > MAX_ATTRIBUTES {
            return Err(Error::corrupt("ntfs", 0, "too many attributes"));
        }
        let keep = {
            let attr = item.to_attribute().map_err(ntfs_err)?;
            matches!(
                attr.ty(),
                Ok(NtfsAttributeType::IndexRoot | NtfsAttributeType::IndexAllocation)
            ) && attr.name().map_err(ntfs_err)? == "$I30"
        };
        if keep {
            items.push(item);
        }
    }
    let mut root = None;
    let mut alloc = None;
    let attrs = items
        .iter()
        .map(|i| i.to_attribute().map_err(ntfs_err))
        .collect::<Result<Vec<_>>>()?;
    for attr in &attrs {
        match attr.ty() {
            Ok(NtfsAttributeType::IndexRoot) if root.is_none() => {
                root = Some(
                    attr.resident_structured_value::<NtfsIndexRoot>()
                        .map_err(ntfs_err)?,
                );
            }
            Ok(NtfsAttributeType::IndexAllocation) if alloc.is_none() => {
                alloc = Some(
                    attr.structured_value::<_, NtfsIndexAllocation>(cur)
                        .map_err(ntfs_err)?,
                );
            }
            _ => {}
        }
    }
    let Some(root) = root else {
        return Ok(None);
    };
    let record_size = root.index_record_size();
    if alloc.is_some() && !(512..=MAX_INDEX_RECORD).contains(&record_size) {
        return Err(Error::corrupt(
            "ntfs",
            0,
            format!("index record size {record_size}"),
        ));
    }
    let mut tree = Tree {
        alloc,
        record_size,
        visited: HashSet::new(),
    };
    let entries = guarded(|| root.entries::<NtfsFileNameIndex>())?;
    f(&mut tree, entries, cur).map(Some)
}

impl Tree<'_, '_> {
    /// Calls `visit` with every keyed entry of the subtree under `entries`,
    /// in index order.
    fn walk<T: Read + Seek>(
        &mut self,
        cur: &mut T,
        entries: NtfsIndexNodeEntries<NtfsFileNameIndex>,
        depth: usize,
        visit: &mut dyn FnMut(&Entry, &NtfsFileName) -> Result<Walk>,
    ) -> Result<Walk> {
        let mut entries = entries;
        while let Some(entry) = next_entry(&mut entries)? {
            if let Some(vcn) = entry.subnode_vcn() {
                let vcn = vcn.map_err(ntfs_err)?;
                let record = self.subnode(cur, vcn, depth)?;
                let sub = guarded(|| record.entries::<NtfsFileNameIndex>())?;
                if let Walk::Stop = self.walk(cur, sub, depth + 1, visit)? {
                    return Ok(Walk::Stop);
                }
            }
            if entry.flags().contains(NtfsIndexEntryFlags::LAST_ENTRY) {
                break;
            }
            if let Some(key) = entry.key() {
                let key = key.map_err(ntfs_err)?;
                if let Walk::Stop = visit(&entry, &key)? {
                    return Ok(Walk::Stop);
                }
            }
        }
        Ok(Walk::Continue)
    }

    fn subnode<T: Read + Seek>(
        &mut self,
        cur: &mut T,
        vcn: ntfs::types::Vcn,
        depth: usize,
    ) -> Result<ntfs::NtfsIndexRecord> {
        if depth >= MAX_DEPTH || !self.visited.insert(vcn.value()) {
            return Err(Error::corrupt(
                "ntfs",
                0,
                format!("directory index loops back to block VCN {}", vcn.value()),
            ));
        }
        let alloc = self
            .alloc
            .as_ref()
            .ok_or_else(|| Error::corrupt("ntfs", 0, "index subnode without $INDEX_ALLOCATION"))?;
        // The crate adds the record's header size to its used and allocated
        // sizes unchecked (an overflow panic with overflow checks on).
        guarded(|| alloc.record_from_vcn(cur, self.record_size, vcn))
    }

    /// Descends towards `name` by `cmp` (name vs key); returns the first
    /// entry comparing equal, as (record number, exact-case match).
    fn find<T: Read + Seek>(
        &mut self,
        cur: &mut T,
        entries: NtfsIndexNodeEntries<NtfsFileNameIndex>,
        depth: usize,
        cmp: &dyn Fn(&NtfsFileName) -> Ordering,
    ) -> Result<Option<(u64, NtfsFileName)>> {
        let mut entries = entries;
        while let Some(entry) = next_entry(&mut entries)? {
            let last = entry.flags().contains(NtfsIndexEntryFlags::LAST_ENTRY);
            let ord = if last {
                Ordering::Less
            } else {
                match entry.key() {
                    Some(key) => {
                        let key = key.map_err(ntfs_err)?;
                        let o = cmp(&key);
                        if o == Ordering::Equal {
                            let rec = entry.file_reference().file_record_number();
                            return Ok(Some((rec, key)));
                        }
                        o
                    }
                    None => Ordering::Less,
                }
            };
            if ord == Ordering::Less {
                return match entry.subnode_vcn() {
                    Some(vcn) => {
                        let vcn = vcn.map_err(ntfs_err)?;
                        let record = self.subnode(cur, vcn, depth)?;
                        let sub = guarded(|| record.entries::<NtfsFileNameIndex>())?;
                        self.find(cur, sub, depth + 1, cmp)
                    }
                    None => Ok(None),
                };
            }
            if last {
                break;
            }
        }
        Ok(None)
    }
}

/// Runs one `ntfs` 0.4 call that panics on some corrupt index nodes, where
/// the value it trusts is one the crate does not let us read beforehand:
///
/// - `NtfsIndexRoot::entries` and `NtfsIndexRecord::entries` slice the node
///   with its entries offset unchecked against the used size or the node's
///   length (the offset has no public accessor);
/// - `NtfsIndexNodeEntries::next` accepts an entry whose length field is
///   below the 16-byte header, then reads its flags past the entry's end.
/// - `NtfsIndexAllocation::record_from_vcn` adds the header size to the
///   record's used and allocated sizes without checking for overflow.
///
/// Each panic is a bounds check on a byte slice owned by the call, so no
/// shared state is left half-changed; we turn it into a Corrupt error.
fn guarded<R>(f: impl FnOnce() -> std::result::Result<R, ntfs::NtfsError>) -> Result<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(ntfs_err),
        Err(_) => Err(Error::corrupt(
            "ntfs",
            0,
            "index node with entries outside its bounds",
        )),
    }
}

/// The next entry of an index node, checked to be at least a header long.
fn next_entry<'s>(
    entries: &mut NtfsIndexNodeEntries<'s, NtfsFileNameIndex>,
) -> Result<Option<Entry<'s>>> {
    let next = guarded(|| entries.next().transpose())?;
    let Some(entry) = next else {
        return Ok(None);
    };
    // `next` read the flags at byte 12, so the length field (bytes 8..10)
    // is in bounds; below 16 the other accessors would index past the end.
    if usize::from(entry.index_entry_length()) < INDEX_ENTRY_HEADER {
        let pos = entry.position().value().map_or(0, |p| p.get());
        return Err(Error::corrupt(
            "ntfs",
            pos,
            "index entry shorter than its header",
        ));
    }
    Ok(Some(entry))
}

/// Visits every entry of directory `file` in index order.
pub(crate) fn for_each<T: Read + Seek>(
    file: &NtfsFile,
    cur: &mut T,
    visit: &mut dyn FnMut(&Entry, &NtfsFileName) -> Result<Walk>,
) -> Result<()> {
    with_tree(file, cur, |tree, entries, cur| {
        tree.walk(cur, entries, 0, visit)
    })?;
    Ok(())
}

/// Finds the entry of directory `file` for which `cmp` says Equal, by
/// descending the tree ordered by the volume's $UpCase collation.
pub(crate) fn find<T: Read + Seek>(
    file: &NtfsFile,
    cur: &mut T,
    cmp: &dyn Fn(&NtfsFileName) -> Ordering,
) -> Result<Option<(u64, NtfsFileName)>> {
    Ok(with_tree(file, cur, |tree, entries, cur| {
        tree.find(cur, entries, 0, cmp)
    })?
    .flatten())
}

/// Compares `name` with an index key the way Windows does, through the
/// volume's $UpCase table (which must have been read).
pub(crate) fn upcase_cmp(ntfs: &Ntfs, name: &str, key: &NtfsFileName) -> Ordering {
    use ntfs::UpcaseOrd;
    name.upcase_cmp(ntfs, &key.name())
}
