#!/usr/bin/env python3
"""Change a mounted ext3/ext4 volume in many small journal transactions.

usage: dirty.py ROOT --seed S

Run on a volume tree.py built (then unmounted and mounted again).  Every
step ends with fsync(2) of what it changed: fsync commits the running JBD2
transaction but, unlike sync(2)/syncfs(2), does not write the block
device's dirty metadata buffers to their home locations.  Those stay in
the journal (committed, not checkpointed) until writeback or unmount, so a
copy of the device taken right after this script holds a journal that
needs recovery.  Everything below /dirty, the renames, deletions, appends
and xattr changes exist only after the journal is replayed.

Deterministic: content from seeded PRNGs, times from fix_times() at the end.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiutil import det_bytes, det_text, fix_times, mbox, setfattr, write_file  # noqa: E402

JBD2_MAGIC = b"\xc0\x3b\x39\x98"


def fsync_path(p):
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dirty(root, seed):
    J = lambda *p: os.path.join(root, *p)  # noqa: E731

    def done(*paths):
        for p in paths:
            fsync_path(J(*p) if isinstance(p, tuple) else J(p))

    # New directory and files, one transaction each.
    os.mkdir(J("dirty"))
    done(".", "dirty")
    for i in range(20):
        n = 500 + 1500 * i
        write_file(J("dirty", f"new_{i:02d}.txt"), det_text(f"{seed}/new/{i}", n))
        done(("dirty", f"new_{i:02d}.txt"), "dirty")
    # A file whose every 1 KiB block starts with the JBD2 magic: with
    # data=journal its journal copies are escaped.
    blk = JBD2_MAGIC + b"\0\0\0\x01"
    write_file(J("dirty", "magic.bin"),
               b"".join(blk + det_bytes(f"{seed}/magic/{i}", 1016) for i in range(16)))
    done(("dirty", "magic.bin"))

    # Appends and in-place overwrites of existing files.
    with open(J("mail", "alice.mbox"), "ab") as f:
        f.write(mbox(f"{seed}/mbox-append", 20 * 1024, owner="alice@example.com"))
        f.flush()
        os.fsync(f.fileno())
    with open(J("sizes", "size_65536.bin"), "r+b") as f:
        f.seek(10000)
        f.write(det_bytes(f"{seed}/overwrite", 20000))
        f.flush()
        os.fsync(f.fileno())
    os.truncate(J("sizes", "size_65537.bin"), 5000)
    done(("sizes", "size_65537.bin"))

    # Renames (within and across directories).
    os.rename(J("README.txt"), J("dirty", "README.moved.txt"))
    os.rename(J("names", "café.txt"), J("names", "cafe renamed.txt"))
    os.rename(J("deep", "l1", "l2", "l3"), J("deep", "l3 moved up"))
    done(".", "dirty", "names", ("deep", "l1", "l2"), "deep")

    # Deletions: many small files, a big file (frees indirect/extent
    # blocks: revoke records), a directory.
    for i in range(0, 600):
        os.unlink(J("many", f"entry_{i:05d}.txt"))
    done("many")
    os.unlink(J("sizes", "size_1048579.bin"))
    os.rmdir(J("empty_dir"))
    done("sizes", ".")
    # ...and new data where the big file was.
    write_file(J("dirty", "reuses_freed.bin"), det_bytes(f"{seed}/reuse", 700 * 1024))
    done(("dirty", "reuses_freed.bin"))

    # A directory of new entries (grows past one block; htree on ext4).
    os.mkdir(J("dirty", "newdir"))
    for i in range(400):
        name = f"item_{i:04d}_with_a_longer_name.txt"
        write_file(J("dirty", "newdir", name), f"item {i}\n".encode() if i % 7 == 0 else b"")
        if i % 7 == 0:
            # Delayed allocation: unsynced data would be lost in the crash.
            done(("dirty", "newdir", name))
    done(("dirty", "newdir"), "dirty")

    # Hard links: new ones, and one more name for an existing group.
    os.link(J("dirty", "new_00.txt"), J("dirty", "newdir", "hard_to_new_00.txt"))
    os.link(J("dirty", "new_00.txt"), J("dirty", "hard_again.txt"))
    os.link(J("links", "a", "hard1.txt"), J("dirty", "hard4.txt"))
    os.unlink(J("links", "a", "hard2.txt"))
    done(("dirty", "newdir"), "dirty", ("links", "a"), ("dirty", "new_00.txt"))

    # Symlinks.
    os.symlink("new_01.txt", J("dirty", "link_to_new"))
    os.symlink("/" + "t" * 300, J("dirty", "long_link"))
    done("dirty")

    # Xattrs: new (in-inode and an external block), changed, removed.
    setfattr(J("dirty", "new_02.txt"), "user.small", b"fresh")
    setfattr(J("dirty", "new_03.txt"), "user.big", det_bytes(f"{seed}/xbig", 700))
    setfattr(J("xattr", "tagged.txt"), "user.comment", b"changed after the checkpoint")
    os.removexattr(J("xattr", "empty_value.txt"), "user.empty")
    setfattr(J("dirty"), "user.dir_attr", b"dirty dir")
    done(("dirty", "new_02.txt"), ("dirty", "new_03.txt"), ("xattr", "tagged.txt"),
         ("xattr", "empty_value.txt"), "dirty")

    # Permissions and ownership.
    os.chmod(J("dirty", "new_04.txt"), 0o600)
    os.chown(J("dirty", "new_05.txt"), 1234, 5678)
    done(("dirty", "new_04.txt"), ("dirty", "new_05.txt"))

    fix_times(root)
    # fix_times changed every inode; touching the root again and fsyncing
    # it commits the transaction holding the last of those changes (and so
    # every earlier one).
    st = os.stat(root)
    os.utime(root, ns=(st.st_atime_ns, st.st_mtime_ns))
    fsync_path(root)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--seed", default="restorefs")
    a = ap.parse_args()
    dirty(a.root, a.seed)


if __name__ == "__main__":
    main()
