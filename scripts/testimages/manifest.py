#!/usr/bin/env python3
"""Write the JSON-lines manifest of a mounted volume to stdout.

usage: manifest.py [--mtools] MOUNTPOINT > out.jsonl

One line per entry (root included as "/"), sorted by path (Python str
order, i.e. by code point).  See scripts/testimages/README.md for the fields.

A symlink whose target starts with MOUNTPOINT/ (ntfs-3g shows absolute
reparse-point links and junctions so) is written as the same path from the
volume root reached by climbing from the link's folder ("../" per level):
the form that resolves to that file wherever the volume is mounted.

--mtools: MOUNTPOINT is a FAT volume copied out with `mcopy -s -m`; only
what mtools asserts is written (path, type; size, sha256 and mtime of
files), and each entry lists those fields under "known": a reader's view is
compared on them alone.
"""
import base64
import hashlib
import json
import os
import stat
import sys

TYPES = [(stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
         (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "chardev"),
         (stat.S_ISBLK, "blockdev")]


def ftype(mode):
    for pred, name in TYPES:
        if pred(mode):
            return name
    raise ValueError(f"unknown file type {mode:o}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in sorted(names):
        if n.startswith("security.selinux"):
            continue
        v = os.getxattr(path, n, follow_symlinks=False)
        out[n] = base64.b64encode(v).decode()
    return out


def walk(root):
    entries = []  # (relpath, fullpath, lstat)
    stack = ["/"]
    while stack:
        rel = stack.pop()
        full = root if rel == "/" else root + rel
        st = os.lstat(full)
        entries.append((rel, full, st))
        if stat.S_ISDIR(st.st_mode):
            for name in os.listdir(full):
                stack.append((rel if rel != "/" else "") + "/" + name)
    entries.sort(key=lambda e: e[0])
    return entries


def inside_target(rel, target, root):
    """An absolute target under the mount point, as a path climbing to the root."""
    if not target.startswith(root + "/"):
        return target
    depth = rel.count("/") - 1
    return "../" * depth + target[len(root) + 1:]


MTOOLS_FIELDS = {"file": ["path", "type", "size", "sha256", "mtime_ns"], "dir": ["path", "type"]}


def main():
    args = sys.argv[1:]
    mtools = "--mtools" in args
    args = [a for a in args if a != "--mtools"]
    root = os.path.abspath(args[0]).rstrip("/") or "/"
    entries = walk(root)
    groups = {}
    for rel, _, st in entries:
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, []).append(rel)
    out = sys.stdout
    for rel, full, st in entries:
        t = ftype(st.st_mode)
        e = {"path": rel, "type": t, "mode": st.st_mode & 0o7777, "uid": st.st_uid,
             "gid": st.st_gid, "nlink": st.st_nlink, "mtime_ns": st.st_mtime_ns}
        if t in ("file", "symlink"):
            e["size"] = st.st_size
        if t == "file":
            e["sha256"] = sha256_file(full)
        if t == "symlink":
            shown = os.readlink(full)
            e["target"] = inside_target(rel, shown, root)
            if e["target"] != shown:
                e["size"] = len(os.fsencode(e["target"]))
        if t != "dir" and st.st_nlink > 1:
            e["link_group"] = min(groups[st.st_ino])
        x = xattrs(full)
        if x:
            e["xattrs"] = x
        if mtools:
            known = MTOOLS_FIELDS[t]
            e = {k: e[k] for k in known}
            e["known"] = known
        out.write(json.dumps(e, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
