#!/usr/bin/env python3
"""Changes made to a populated image just before a simulated crash
(`xfs_io -x -c "shutdown -f"`), so the log holds them and the metadata
on disk does not: creates, renames, deletes, overwrites, xattrs, a
directory growing from short form to leaf, a file whose extent list
becomes a btree, symlinks and hard links. `phase` 1 runs before a sync,
2 after it, so some changes may be written home and some only logged.

`churn` logs many small transactions (create, write, fsync, unlink)
to wrap a small log.

usage: crash.py MOUNTPOINT 1|2|churn
"""
import os
import subprocess
import sys

root, phase = sys.argv[1], sys.argv[2]


def p(*parts):
    return os.path.join(root, *parts)


def data(n, seed):
    return bytes((i * 7 + seed + i // 251) % 256 for i in range(n))


if phase == "churn":
    d = p("churn")
    os.makedirs(d, exist_ok=True)
    for i in range(1500):
        name = os.path.join(d, f"c{i % 200:03d}-{'q' * (i % 50)}")
        fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, data(i % 3000, i))
        os.fsync(fd)
        os.close(fd)
        if i % 3 == 0:
            j = (i * 7) % 200
            try:
                os.unlink(os.path.join(d, f"c{j:03d}-{'q' * (j % 50)}"))
            except FileNotFoundError:
                pass
elif phase == "1":
    os.mkdir(p("after"))
    with open(p("after", "new"), "wb") as f:
        f.write(data(5000, 1))
    os.rename(p("short", "f1"), p("after", "moved"))
    os.unlink(p("hard-c"))
    os.link(p("hard-a"), p("after", "hard-d"))
    with open(p("tiny", "a"), "r+b") as f:
        f.seek(10)
        f.write(b"overwritten")
    os.setxattr(p("after", "new"), "user.phase", b"one")
else:
    # Short form to block to leaf.
    os.mkdir(p("grown"))
    for i in range(400):
        with open(p("grown", f"entry-{i:04d}-{'z' * (i % 30)}"), "wb") as f:
            f.write(data(i % 7 * 100, i))
    # Many extents: the fork becomes a btree.
    with open(p("after", "btree"), "wb") as f:
        for i in range(120):
            f.seek(i * 8192)
            f.write(data(4096, i))
        f.flush()
        os.fsync(f.fileno())
    os.symlink("after/new", p("after", "ln-short"))
    os.symlink("s" * 700, p("after", "ln-long"))
    os.rename(p("tiny"), p("after", "tiny-moved"))
    os.rmdir(p("after", "tiny-moved", "sub"))
    for i in range(0, 400, 3):
        os.unlink(p("grown", f"entry-{i:04d}-{'z' * (i % 30)}"))
    with open(p("after", "new"), "r+b") as f:
        f.write(b"second write")
        f.flush()
        os.fsync(f.fileno())
    os.setxattr(p("after", "new"), "user.phase", b"two" * 40)
    os.setxattr(p("after", "new"), "user.more", b"v" * 300)
    os.removexattr(p("xa-short"), os.listxattr(p("xa-short"))[0])
    os.chmod(p("after", "moved"), 0o600)
    os.mkfifo(p("after", "fifo"))
    # Shared extents, then copy-on-write over part of one copy (deferred
    # mapping and refcount updates), and a big file freed and truncated
    # (extent-free intents).
    with open(p("after", "shared"), "wb") as f:
        f.write(data(256 * 1024, 9))
        f.flush()
        os.fsync(f.fileno())
    subprocess.run(
        ["cp", "--reflink=always", p("after", "shared"), p("after", "shared2")],
        check=True,
    )
    with open(p("after", "shared2"), "r+b") as f:
        f.seek(65536)
        f.write(b"cow" * 5000)
        f.flush()
        os.fsync(f.fileno())
    with open(p("after", "big"), "wb") as f:
        f.write(data(3 << 20, 5))
        f.flush()
        os.fsync(f.fileno())
    os.truncate(p("after", "big"), 100000)
    os.unlink(p("sparse"))
