//! Which directory entries a listing shows, following ntfs-3g: metafiles
//! hidden, 8.3 aliases hidden behind their long names, duplicates dropped.

use std::collections::HashSet;

use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};

/// Records below this are metafiles ($MFT ... reserved); ntfs-3g hides them.
pub(crate) const FIRST_USER_RECORD: u64 = 16;
/// `$Extend`, whose children ($Quota, $ObjId, $Reparse, ...) are metafiles.
pub(crate) const EXTEND_RECORD: u64 = 11;
/// The root directory.
pub(crate) const ROOT_RECORD: u64 = 5;
/// Record number of $LogFile.
pub(crate) const LOGFILE_RECORD: u64 = 2;

/// One index entry, as read from the directory's B+ tree.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub name: String,
    pub record: u64,
    pub namespace: NtfsFileNamespace,
    pub attributes: NtfsFileAttributeFlags,
}

/// Whether record `record`, named in directory `dir`, is a hidden metafile.
pub(crate) fn is_metafile(dir: u64, record: u64) -> bool {
    record < FIRST_USER_RECORD || dir == EXTEND_RECORD
}

/// The entries of directory `dir` a listing shows, in index order.
pub(crate) fn visible(dir: u64, raw: Vec<RawEntry>) -> Vec<RawEntry> {
    // Records that have a name other than their 8.3 alias in this directory.
    let long: HashSet<u64> = raw
        .iter()
        .filter(|e| e.namespace != NtfsFileNamespace::Dos)
        .map(|e| e.record)
        .collect();
    let mut seen = HashSet::new();
    raw.into_iter()
        .filter(|e| !is_metafile(dir, e.record))
        .filter(|e| e.namespace != NtfsFileNamespace::Dos || !long.contains(&e.record))
        .filter(|e| !e.name.is_empty() && !e.name.contains('/') && !e.name.contains('\0'))
        .filter(|e| seen.insert((e.name.clone(), e.record)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, record: u64, namespace: NtfsFileNamespace) -> RawEntry {
        RawEntry {
            name: name.into(),
            record,
            namespace,
            attributes: NtfsFileAttributeFlags::empty(),
        }
    }

    #[test]
    fn hides_dos_aliases_metafiles_and_duplicates() {
        use NtfsFileNamespace::*;
        let raw = vec![
            e("$MFT", 0, Win32AndDos),
            e("LONGFI~1.TXT", 40, Dos),
            e("longfilename.txt", 40, Win32),
            e("ONLY~1", 41, Dos),
            e("posix", 42, Posix),
            e("posix", 42, Posix),
            e("Posix", 43, Posix),
        ];
        let names: Vec<_> = visible(ROOT_RECORD, raw)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["longfilename.txt", "ONLY~1", "posix", "Posix"]);
        assert!(visible(EXTEND_RECORD, vec![e("$Quota", 24, Win32AndDos)]).is_empty());
    }
}
