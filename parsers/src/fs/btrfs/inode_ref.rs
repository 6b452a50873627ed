//! Names of an inode in its parent directories: `INODE_REF` (key offset
//! = parent; entries of index u64, name_len u16, name) and `INODE_EXTREF`
//! (key offset = a hash; entries of parent u64, index u64, name_len u16,
//! name), used when the names of one inode in one directory overflow an
//! item.

use crate::bytes::{le16, le64};
use crate::{Error, Result};

/// One name of an inode: which directory, which name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeRef {
    pub parent: u64,
    pub name: Vec<u8>,
}

fn corrupt(ino: u64, what: &str) -> Error {
    Error::corrupt("btrfs", ino, format!("inode {ino}: {what}"))
}

/// Entries of an `INODE_REF` item of `ino` under `parent`.
pub fn parse_ref(b: &[u8], ino: u64, parent: u64) -> Result<Vec<InodeRef>> {
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let n = usize::from(le16(rest, 8));
        let name = rest
            .get(10..10 + n)
            .ok_or_else(|| corrupt(ino, "inode ref past its item"))?;
        out.push(InodeRef {
            parent,
            name: name.to_vec(),
        });
        rest = &rest[10 + n..];
    }
    Ok(out)
}

/// Entries of an `INODE_EXTREF` item of `ino`.
pub fn parse_extref(b: &[u8], ino: u64) -> Result<Vec<InodeRef>> {
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let n = usize::from(le16(rest, 16));
        let name = rest
            .get(18..18 + n)
            .ok_or_else(|| corrupt(ino, "inode extref past its item"))?;
        out.push(InodeRef {
            parent: le64(rest, 0),
            name: name.to_vec(),
        });
        rest = &rest[18 + n..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs() {
        let mut b = 3u64.to_le_bytes().to_vec();
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"ab");
        assert_eq!(parse_ref(&b, 300, 256).unwrap()[0].name, b"ab");
        assert!(parse_ref(&b[..11], 300, 256).is_err());
        let mut e = 257u64.to_le_bytes().to_vec();
        e.extend_from_slice(&9u64.to_le_bytes());
        e.extend_from_slice(&1u16.to_le_bytes());
        e.push(b'x');
        assert_eq!(
            parse_extref(&e, 300).unwrap(),
            vec![InodeRef {
                parent: 257,
                name: b"x".to_vec()
            }]
        );
    }
}
