#!/usr/bin/env python3
"""Fills a mounted XFS at argv[1] with every on-disk shape the reader
handles. Deterministic: fixed seed, fixed sizes. argv[2] = "small" makes
fewer and smaller entries (for the mutation test)."""
import os
import random
import socket
import struct
import subprocess
import sys

root = sys.argv[1]
small = len(sys.argv) > 2 and sys.argv[2] == "small"
rng = random.Random(20240601)


def p(*parts):
    return os.path.join(root, *parts)


def data(n):
    return bytes(rng.getrandbits(8) for _ in range(n)) if n < 65536 else rng.randbytes(n)


def xfs_io(path, *cmds):
    args = ["xfs_io", "-f"]
    for c in cmds:
        args += ["-c", c]
    subprocess.run(args + [path], check=True, stdout=subprocess.DEVNULL)


# Short-form directory with small files of assorted sizes.
os.makedirs(p("short"))
for i, n in enumerate([0, 1, 100, 4095, 4096, 4097, 100000]):
    with open(p("short", f"f{i}"), "wb") as f:
        f.write(data(n))
# A directory small enough to stay inline in its inode.
os.makedirs(p("tiny", "sub"))
with open(p("tiny", "a"), "wb") as f:
    f.write(b"tiny")
os.symlink("a", p("tiny", "l"))
# Long and unicode names.
with open(p("short", "x" * 255), "wb") as f:
    f.write(b"long")
with open(p("short", "ünïcødé-名前-🙂"), "wb") as f:
    f.write(b"unicode")

# Block, leaf and node/btree directories.
for name, count in [("block", 20), ("leaf", 300), ("node", 2000 if small else 50000)]:
    os.makedirs(p(name))
    for i in range(count):
        open(p(name, f"entry-{i:06d}-{'y' * (i % 40)}"), "wb").close()
if not small:
    # Remove some to leave free space in data blocks.
    for i in range(0, 50000, 7):
        os.unlink(p("node", f"entry-{i:06d}-{'y' * (i % 40)}"))

# Sparse file, unwritten extents.
with open(p("sparse"), "wb") as f:
    f.seek(10 << 20)
    f.write(data(5000))
    f.seek(50 << 20)
    f.write(b"end")
xfs_io(p("prealloc"), "falloc 0 1m", "pwrite -S 0x61 64k 4k", "pwrite -S 0x62 900k 8k")
xfs_io(p("prealloc-past-eof"), "pwrite -S 0x63 0 10k", "falloc -k 10k 1m")

# A fragmented file: write it whole, then punch every other block so its
# extents outgrow the inode and need a bmbt.
blocks = 400 if small else 6000
with open(p("fragmented"), "wb") as f:
    f.write(data(blocks * 4096))
cmds = [f"fpunch {i * 4096} 4096" for i in range(1, blocks, 2)]
for k in range(0, len(cmds), 1000):
    xfs_io(p("fragmented"), *cmds[k : k + 1000])

# Two interleaved files, appended in turn with fsync.
with open(p("ilv-a"), "wb") as a, open(p("ilv-b"), "wb") as b:
    for i in range(100 if small else 800):
        for f in (a, b):
            f.write(data(4096))
            f.flush()
            os.fsync(f.fileno())

# Symlinks: inline and remote.
os.symlink("short/f1", p("link-inline"))
os.symlink("t" * 900, p("link-remote"))
os.symlink("/" + "/".join(["dir"] * 100), p("link-400"))

# Hard links.
with open(p("hard-a"), "wb") as f:
    f.write(b"linked")
os.link(p("hard-a"), p("short", "hard-b"))
os.link(p("hard-a"), p("hard-c"))

# Special files.
os.mkfifo(p("fifo"))
os.mknod(p("chr"), 0o20644, os.makedev(1, 3))
os.mknod(p("blk"), 0o60600, os.makedev(259, 70000))
s = socket.socket(socket.AF_UNIX)
s.bind(p("sock"))
s.close()

# POSIX ACLs (stored as trusted.SGI_ACL_FILE / SGI_ACL_DEFAULT), set in
# the posix_acl_xattr form setfacl uses: version 2, (tag, perm, id) entries.
def acl(*entries):
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


NOID = 0xFFFFFFFF
with open(p("acl-file"), "wb") as f:
    f.write(b"acl")
os.setxattr(p("acl-file"), "system.posix_acl_access",
            acl((1, 6, NOID), (2, 4, 1000), (2, 6, 1001), (4, 4, NOID), (8, 5, 100), (0x10, 6, NOID),
                (0x20, 0, NOID)))
os.mkdir(p("acl-dir"))
os.setxattr(p("acl-dir"), "system.posix_acl_default",
            acl((1, 7, NOID), (4, 5, NOID), (8, 7, 4242), (0x10, 7, NOID), (0x20, 5, NOID)))
os.setxattr(p("acl-dir"), "system.posix_acl_access",
            acl((1, 7, NOID), (2, 7, 33), (4, 5, NOID), (0x10, 7, NOID), (0x20, 1, NOID)))
with open(p("acl-dir", "inherits"), "wb") as f:
    f.write(b"inherits the default ACL")

# Xattrs: short form, leaf, node, remote values.
with open(p("xa-short"), "wb") as f:
    f.write(b"x")
os.setxattr(p("xa-short"), "user.a", b"1")
os.setxattr(p("xa-short"), "trusted.t", b"trusted value")
os.setxattr(p("xa-short"), "security.s", b"sec")
with open(p("xa-leaf"), "wb") as f:
    f.write(b"x")
for i in range(20):
    os.setxattr(p("xa-leaf"), f"user.k{i}", data(50))
os.setxattr(p("xa-leaf"), "user.big", data(65536))
os.setxattr(p("xa-leaf"), "user.mid", data(3000))
with open(p("xa-node"), "wb") as f:
    f.write(b"x")
for i in range(60 if small else 400):
    os.setxattr(p("xa-node"), f"user.attribute-number-{i}", data(40 + i % 60))
os.setxattr(p("xa-node"), "trusted.remote", data(10000))
os.setxattr(p("short"), "user.ondir", b"dir attr")
os.setxattr(p("link-inline"), "trusted.onlink", b"link attr", follow_symlinks=False)

# Owners, modes, times.
os.chown(p("short", "f1"), 1234, 5678)
os.chmod(p("short", "f2"), 0o4751)
os.utime(p("short", "f3"), ns=(1_000_000_123, 2_000_000_456))
os.utime(p("short", "f4"), ns=(-1_000_000_000, 4_102_444_800_999_999_999))
os.chmod(p("block"), 0o1777)
