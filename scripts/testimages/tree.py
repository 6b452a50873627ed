#!/usr/bin/env python3
"""Build the standard test source tree directly in a mounted volume.

usage: tree.py ROOT --fs ext|ntfs [--seed S] [--big-size BYTES] [--fill-limit BYTES]

--fs ext is for any Unix filesystem (ext2/3/4, XFS).  --fill-limit bounds
the fillers written before /big/fragmented.bin (large volumes: the file is
then less fragmented, or not at all).

Everything is deterministic: content comes from seeded PRNGs, and all
timestamps are fixed by tiutil.fix_times() at the very end.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiutil import (det_bytes, det_text, fix_times, fragmented_file, mbox,  # noqa: E402
                    posix_acl, setfattr, try_chmod, write_file)


def build(root, fs, seed, big_size, fill_limit=None):
    ext = fs == "ext"
    J = lambda *p: os.path.join(root, *p)  # noqa: E731
    md = lambda *p: os.makedirs(J(*p), exist_ok=True)  # noqa: E731
    cluster = os.statvfs(root).f_bsize

    write_file(J("README.txt"), det_text(f"{seed}/readme", 1500))

    # Empty things.
    md("empty_dir")
    write_file(J("empty_file"), b"")
    md("data")
    write_file(J("data", "empty.bin"), b"")

    # Deep nesting (7 levels below the root).
    deep = J("deep", "l1", "l2", "l3", "l4", "l5", "l6")
    os.makedirs(deep)
    write_file(os.path.join(deep, "leaf.txt"), b"leaf at depth 7\n")
    write_file(J("deep", "l1", "l2", "mid.txt"), b"middle\n")

    # Size boundaries.
    md("sizes")
    sizes = [1, 100, 700, 1023, 1024, 1025, 4095, 4096, 4097,
             65535, 65536, 65537, 1048576 + 3]
    for n in sizes:
        write_file(J("sizes", f"size_{n}.bin"), det_bytes(f"{seed}/size/{n}", n))
    for tag, n in (("m1", cluster - 1), ("eq", cluster), ("p1", cluster + 1),
                   ("2m1", 2 * cluster - 1), ("2p1", 2 * cluster + 1)):
        write_file(J("sizes", f"cluster_{tag}.bin"), det_bytes(f"{seed}/cl/{tag}", n))
    write_file(J("sizes", "zeros_65536.bin"), b"\0" * 65536)

    # A directory with 3000 entries (every 10th has content).
    md("many")
    for i in range(3000):
        write_file(J("many", f"entry_{i:05d}.txt"),
                   f"entry {i}\n".encode() if i % 10 == 0 else b"")

    # Awkward names.
    md("names")
    long_name = "L" * 251 + ".txt"
    assert len(long_name.encode()) == 255
    write_file(J("names", long_name), b"255-byte name\n")
    for n in ["café.txt", "naïve résumé.txt", "Ünïcödé Ordner", "日本語のファイル.txt",
              "中文目录", "😀 emoji 🎉.txt", "with space.txt", "  leading spaces.txt",
              "it's quoted.txt", 'say "hi".txt', "semi;colon & amp.txt",
              "UPPER.TXT", "upper.txt", "dot.in.name.tar.gz", "#hash%percent.txt"]:
        if n in ("Ünïcödé Ordner", "中文目录"):
            md("names", n)
            write_file(J("names", n, "inside.txt"), n.encode() + b"\n")
        else:
            write_file(J("names", n), ("name: " + n + "\n").encode())

    # Symlinks and hard links.
    md("links", "a")
    md("links", "b")
    write_file(J("links", "a", "hard1.txt"), det_text(f"{seed}/hard", 5000))
    os.link(J("links", "a", "hard1.txt"), J("links", "a", "hard2.txt"))
    os.link(J("links", "a", "hard1.txt"), J("links", "b", "hard3.txt"))
    os.symlink("../sizes/size_4096.bin", J("links", "rel_file"))
    os.symlink("a", J("links", "rel_dir"))
    os.symlink("/README.txt", J("links", "abs_file"))
    os.symlink("/etc/passwd", J("links", "abs_outside"))
    os.symlink("does/not/exist", J("links", "dangling"))
    os.symlink("日本語/ターゲット", J("links", "dangling_unicode"))
    os.symlink("x" * 200 + "/" + "y" * 200, J("links", "long_target"))
    os.symlink("rel_file", J("links", "chain"))

    # Mail.
    md("mail")
    write_file(J("mail", "alice.mbox"), mbox(f"{seed}/mbox", 200 * 1024))

    # Scripts.
    md("scripts")
    for i, name in enumerate(["backup.sh", "restore.sh", "cleanup.sh"]):
        p = J("scripts", name)
        write_file(p, (f"#!/bin/sh\n# script {i}\nset -eu\necho \"{name} running\"\n"
                       + det_text(f"{seed}/sh/{i}", 600).decode()
                       .replace("\n", "\n# ")).encode() + b"\n")
        try_chmod(p, 0o755)
    for i, name in enumerate(["Backup-Users.ps1", "Get-Inventory.ps1"]):
        body = (f"# PowerShell script {i}\r\nparam([string]$Path = 'C:\\Users')\r\n"
                f"Get-ChildItem -Path $Path -Recurse | Where-Object {{ $_.Length -gt {i * 1000} }}"
                f" | Select-Object FullName, Length\r\nWrite-Host \"done {name}\"\r\n")
        write_file(J("scripts", name), b"\xef\xbb\xbf" + body.encode())

    # Sparse file: data at 0, a hole, data at 1 MiB + 100, hole to 3 MiB.
    md("sparse")
    with open(J("sparse", "sparse.bin"), "wb") as f:
        f.write(det_bytes(f"{seed}/sparse/0", 4096))
        f.seek(1048576 + 100)
        f.write(det_bytes(f"{seed}/sparse/1", 5000))
        f.truncate(3 * 1048576)

    # Extended attributes (NTFS: named data streams via streams_interface=xattr).
    md("xattr")
    write_file(J("xattr", "tagged.txt"), b"has xattrs\n")
    setfattr(J("xattr", "tagged.txt"), "user.comment", b"hello world")
    setfattr(J("xattr", "tagged.txt"), "user.binary", bytes(range(256)))
    write_file(J("xattr", "downloaded.exe"), det_bytes(f"{seed}/exe", 3000))
    setfattr(J("xattr", "downloaded.exe"), "user.Zone.Identifier",
             b"[ZoneTransfer]\r\nZoneId=3\r\n")
    write_file(J("xattr", "empty_value.txt"), b"empty xattr value\n")
    setfattr(J("xattr", "empty_value.txt"), "user.empty", b"")
    if ext:
        setfattr(J("xattr"), "user.dir_attr", b"on a directory")
    else:
        # Large named stream: non-resident on NTFS (FUSE caps xattr values at 64 KiB).
        write_file(J("xattr", "big_stream.txt"), b"big stream\n")
        setfattr(J("xattr", "big_stream.txt"), "user.big", det_bytes(f"{seed}/bigstream", 60000))

    # Unix-only things.
    if ext:
        md("perms")
        for mode in (0o600, 0o700, 0o444, 0o640, 0o4755, 0o2755):
            p = J("perms", f"mode_{mode:04o}")
            write_file(p, f"mode {mode:o}\n".encode())
            os.chmod(p, mode)
        md("perms", "sticky_dir")
        os.chmod(J("perms", "sticky_dir"), 0o1777)
        md("perms", "private_dir")
        os.chmod(J("perms", "private_dir"), 0o700)
        write_file(J("perms", "owned_1000.txt"), b"owned by 1000:1000\n")
        os.chown(J("perms", "owned_1000.txt"), 1000, 1000)
        # POSIX ACLs: user/group owner, named users and groups, mask, other
        # (getfacl: user::rw- user:1000:r-- user:1001:rw- group::r--
        # group:100:r-x mask::rw- other::---) and a directory's default ACL,
        # inherited by what is made in it.
        write_file(J("perms", "acl_file.txt"), b"has an access ACL\n")
        setfattr(J("perms", "acl_file.txt"), "system.posix_acl_access",
                 posix_acl((1, 6, -1), (2, 4, 1000), (2, 6, 1001), (4, 4, -1), (8, 5, 100),
                           (0x10, 6, -1), (0x20, 0, -1)))
        md("perms", "acl_dir")
        setfattr(J("perms", "acl_dir"), "system.posix_acl_default",
                 posix_acl((1, 7, -1), (4, 5, -1), (8, 7, 4242), (0x10, 7, -1), (0x20, 5, -1)))
        write_file(J("perms", "acl_dir", "inherited.txt"), b"inherits the default ACL\n")
        md("special")
        os.mkfifo(J("special", "fifo"))

    # The fragmented big file goes last so it has to use the holes.
    md("big")
    nfill = fragmented_file(root, os.path.join("big", "fragmented.bin"), big_size, f"{seed}/big",
                            fill_limit=fill_limit)
    print(f"tree: {fs} cluster={cluster} fillers={nfill}", file=sys.stderr)

    fix_times(root)
    os.sync()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--fs", choices=["ext", "ntfs"], required=True)
    ap.add_argument("--seed", default="restorefs")
    ap.add_argument("--big-size", type=int, default=6 * 1048576 + 12345)
    ap.add_argument("--fill-limit", type=int, default=None)
    a = ap.parse_args()
    build(a.root, a.fs, a.seed, a.big_size, a.fill_limit)


if __name__ == "__main__":
    main()
