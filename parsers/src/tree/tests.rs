//! The tree's composition: grafts of items and deleted views over a
//! filesystem held in memory, so the seam is tested apart from any format.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use super::*;
use crate::fs::{DirEntry, FsInfo};
use crate::readat::MemSource;
use crate::Source;

#[test]
fn ino_round_trips() {
    for n in [
        Node::Root,
        Node::Raw(0),
        Node::Raw(7),
        Node::Fs(0, 5),
        Node::Fs(3, 1 << 40),
        Node::Point(0),
        Node::Point(41),
    ] {
        assert_eq!(Node::from_ino(n.ino()), Some(n));
    }
    assert_eq!(Node::from_ino(0), None);
}

/// A flat filesystem in memory: a root (node 1) holding files 2.. with
/// the given names and contents, and an optional deleted view.
struct MemFs {
    files: Vec<(&'static str, Vec<u8>)>,
    deleted: Option<Arc<dyn FileSystem>>,
}

impl MemFs {
    fn file(&self, node: NodeId) -> Result<&(&'static str, Vec<u8>)> {
        usize::try_from(node)
            .ok()
            .and_then(|n| n.checked_sub(2))
            .and_then(|i| self.files.get(i))
            .ok_or_else(|| Error::NotFound(format!("node {node}")))
    }
}

impl FileSystem for MemFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: "memfs".into(),
            block_size: 512,
            ..FsInfo::default()
        }
    }
    fn root(&self) -> NodeId {
        1
    }
    fn lookup(&self, dir: NodeId, name: &OsStr) -> Result<Option<NodeId>> {
        Ok(self
            .read_dir(dir)?
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.node))
    }
    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>> {
        if dir != 1 {
            return Err(Error::NotADirectory(format!("node {dir}")));
        }
        Ok((0..self.files.len())
            .map(|i| DirEntry {
                name: self.files[i].0.into(),
                node: i as u64 + 2,
                kind: FileType::File,
            })
            .collect())
    }
    fn stat(&self, node: NodeId) -> Result<Stat> {
        let (kind, size) = match node {
            1 => (FileType::Dir, 0),
            n => (FileType::File, self.file(n)?.1.len() as u64),
        };
        let mut st = synthetic_stat(Timespec::default(), kind, size, 0o444, 1);
        st.node = node;
        Ok(st)
    }
    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let data = &self.file(node)?.1;
        let at = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = (data.len() - at).min(buf.len());
        buf[..n].copy_from_slice(&data[at..at + n]);
        Ok(n)
    }
    fn read_link(&self, node: NodeId) -> Result<OsString> {
        Err(Error::NotASymlink(format!("node {node}")))
    }
    fn xattrs(&self, _node: NodeId) -> Result<Vec<(OsString, Vec<u8>)>> {
        Ok(Vec::new())
    }
    fn deleted(&self) -> Result<Option<Arc<dyn FileSystem>>> {
        Ok(self.deleted.clone())
    }
}

/// Items of a file whose content is `ITEMS:a,b`: one empty file per name.
struct ListItems;

impl ItemSource for ListItems {
    fn name(&self) -> &'static str {
        "list"
    }
    fn open(&self, file: Source) -> Result<Option<Arc<dyn FileSystem>>> {
        let mut buf = vec![0u8; usize::try_from(file.size()).unwrap_or(0).min(4096)];
        file.read_exact_at(0, &mut buf)
            .map_err(|e| Error::io("list", 0, e))?;
        let Some(rest) = buf.strip_prefix(b"ITEMS:") else {
            return Ok(None);
        };
        let names: Vec<&'static str> = String::from_utf8_lossy(rest)
            .split(',')
            .map(|n| &*Box::leak(n.to_string().into_boxed_str()))
            .collect();
        Ok(Some(Arc::new(MemFs {
            files: names.into_iter().map(|n| (n, b"item".to_vec())).collect(),
            deleted: None,
        })))
    }
}

static SOURCES: [&dyn ItemSource; 1] = [&ListItems];

fn tree(deleted: bool, items: bool) -> RestoreTree {
    let gone: Arc<dyn FileSystem> = Arc::new(MemFs {
        files: vec![("old.txt", b"was here".to_vec())],
        deleted: None,
    });
    let fs: Arc<dyn FileSystem> = Arc::new(MemFs {
        files: vec![
            ("box", b"ITEMS:m1,m2".to_vec()),
            ("plain", b"nothing".to_vec()),
            ("real#", b"ITEMS:x".to_vec()),
            ("real", b"ITEMS:y".to_vec()),
        ],
        deleted: Some(gone),
    });
    let disk: Source = Arc::new(MemSource(vec![0; 512]));
    let vol = TreeVolume {
        name: "root".into(),
        partition: None,
        source: disk.clone(),
        state: VolumeState::Fs(crate::fs::FsKind::Fat, fs),
    };
    let image = Image::new(disk, "raw", 512);
    let mut t =
        RestoreTree::assemble(image, Table::none(), vec![vol], true).with_item_sources(&SOURCES);
    t.options.deleted = deleted;
    t.options.items = items;
    t
}

fn names(t: &RestoreTree, path: &str) -> Vec<String> {
    let node = t.resolve(path).unwrap();
    let mut n: Vec<String> = t
        .read_dir(node)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn items_are_reachable_by_path_and_listed_only_when_asked() {
    let plain = tree(false, false);
    assert_eq!(names(&plain, "/"), ["box", "plain", "real", "real#"]);
    assert_eq!(names(&plain, "/box#"), ["m1", "m2"]);
    let m1 = plain.resolve("/box#/m1").unwrap();
    let mut buf = [0u8; 16];
    let n = plain.read(m1, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"item");
    // Not a mailbox: no items, by path either.
    assert!(matches!(plain.resolve("/plain#"), Err(Error::NotFound(_))));
    // A guest file really named `real#` wins over the items of `real`.
    assert_eq!(
        plain.stat(plain.resolve("/real#").unwrap()).unwrap().kind,
        FileType::File
    );

    let listed = tree(false, true);
    assert_eq!(
        names(&listed, "/"),
        ["box", "box#", "plain", "real", "real#", "real##"]
    );
    assert_eq!(names(&listed, "/real##"), ["x"]);
    // One graft per file, whatever the order of lookups and listings.
    let a = listed.resolve("/box#").unwrap();
    let b = listed.resolve("/box#").unwrap();
    assert_eq!(a, b);
    assert_eq!(listed.volume_index(a), Some(0));
    assert!(
        listed.describe(a).contains("items of box (list)"),
        "{}",
        listed.describe(a)
    );
}

#[test]
fn deleted_view_only_with_the_option() {
    let without = tree(false, false);
    assert!(matches!(
        without.resolve("/$Deleted"),
        Err(Error::NotFound(_))
    ));
    let with = tree(true, false);
    assert!(names(&with, "/").contains(&"$Deleted".to_string()));
    assert_eq!(names(&with, "/$Deleted"), ["old.txt"]);
    let old = with.resolve("/$Deleted/old.txt").unwrap();
    let mut buf = [0u8; 16];
    let n = with.read(old, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"was here");
    // Inode numbers of the graft do not collide with the volume's.
    let live = with.resolve("/box").unwrap();
    assert_ne!(old.ino(), live.ino());
    assert_eq!(Node::from_ino(old.ino()), Some(old));
}
