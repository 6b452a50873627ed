#!/usr/bin/env python3
"""Write the JSON-lines manifest of a mounted volume to stdout.

usage: manifest.py MOUNTPOINT > out.jsonl

One line per entry (root included as "/"), sorted by path (Python str
order, i.e. by code point).  See scripts/testimages/README.md for the fields.
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


def main():
    root = os.path.abspath(sys.argv[1]).rstrip("/") or "/"
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
            e["target"] = os.readlink(full)
        if t != "dir" and st.st_nlink > 1:
            e["link_group"] = min(groups[st.st_ino])
        x = xattrs(full)
        if x:
            e["xattrs"] = x
        out.write(json.dumps(e, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
