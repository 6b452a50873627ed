//! POSIX ACLs as Linux's getxattr returns them (`posix_acl_xattr`:
//! version 2, then one little-endian (tag, perm, id) entry each), the one
//! form every filesystem's own on-disk ACL is shown in, so that `rsync -X`
//! or `cp -a` from the mount, and `restorefs cp`, carry them over.

/// The xattr names Linux shows ACLs under.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

/// Entry tags that name a user or group by id; the others carry no id.
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;
/// Most entries one ACL may have (Linux refuses more in `posix_acl_valid`'s callers).
pub const MAX_ENTRIES: usize = 8191;

/// The `posix_acl_xattr` value of `entries` (tag, perm, id); ids of
/// entries other than named users and groups become `ACL_UNDEFINED_ID`.
pub fn to_xattr(entries: impl IntoIterator<Item = (u16, u16, u32)>) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        let id = if tag == ACL_USER || tag == ACL_GROUP {
            id
        } else {
            u32::MAX
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Whether `tag` is one of the six entry tags (user/group owner and
/// named, mask, other).
pub fn is_tag(tag: u16) -> bool {
    matches!(tag, 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20)
}

/// Whether entries of `tag` carry an id in compact on-disk forms (ext4).
pub fn has_id(tag: u16) -> bool {
    tag == ACL_USER || tag == ACL_GROUP
}
