"""Shared helpers for the test-image source trees (deterministic content and times)."""
import errno
import os
import random
import subprocess

# Fixed epoch for all timestamps: 2020-09-13T12:26:40Z.  Every mtime is a
# multiple of 100 ns (NTFS granularity) and they are distinct whole seconds
# (ext2/ext3 with 128-byte inodes keep only seconds).
BASE_EPOCH_S = 1_600_000_000


def det_bytes(seed, n):
    """n deterministic pseudo-random bytes for a string seed."""
    return random.Random(seed).randbytes(n)


def det_text(seed, n):
    """n bytes of deterministic ASCII 'words' text with newlines."""
    rng = random.Random(seed)
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "restore", "backup", "disk",
             "volume", "cluster", "inode", "extent", "journal", "mailbox", "alice",
             "bob", "report", "quarterly", "meeting", "invoice", "the", "and", "of"]
    out = []
    size = 0
    line = []
    while size < n:
        w = rng.choice(words)
        line.append(w)
        size += len(w) + 1
        if len(line) >= 12:
            out.append(" ".join(line) + "\n")
            line = []
    out.append(" ".join(line) + "\n")
    return "".join(out).encode()[:n]


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def mbox(seed, target_size, owner="alice@example.com"):
    """An mbox (mboxrd style) of RFC 822 messages, about target_size bytes."""
    rng = random.Random(seed)
    senders = ["bob@example.com", "carol@example.org", "dave@example.net",
               "it-support@example.com", "newsletter@example.org"]
    subjects = ["Quarterly report", "Re: backup schedule", "Lunch on Friday?",
                "Your invoice #4711", "Disk restore test", "Meeting notes",
                "Fwd: photos", "Password expiry notice"]
    msgs = []
    size = 0
    i = 0
    while size < target_size:
        sender = rng.choice(senders)
        subj = rng.choice(subjects)
        day = 1 + i % 28
        body = det_text(f"{seed}/body/{i}", rng.randint(8000, 40000)).decode()
        if i % 3 == 1:
            # A body line starting with "From " must be quoted in an mbox.
            body = ">From the archive: this line was quoted.\n" + body
        msg = (f"From {sender} Mon Sep {day:2d} 10:{i % 60:02d}:00 2020\n"
               f"Return-Path: <{sender}>\n"
               f"From: {sender.split('@')[0].title()} <{sender}>\n"
               f"To: Alice <{owner}>\n"
               f"Subject: {subj}\n"
               f"Date: Mon, {day:02d} Sep 2020 10:{i % 60:02d}:00 +0000\n"
               f"Message-ID: <{i:04d}.{rng.getrandbits(32):08x}@example.com>\n"
               f"MIME-Version: 1.0\n"
               f"Content-Type: text/plain; charset=us-ascii\n"
               f"\n{body}\n")
        msgs.append(msg)
        size += len(msg)
        i += 1
    return "".join(msgs).encode()


def setfattr(path, name, value):
    """Set an xattr with the setfattr tool (value: bytes, passed hex-encoded).

    Values too big for one command-line argument use os.setxattr (the same
    setxattr(2) call setfattr makes)."""
    if len(value) > 32768:
        os.setxattr(path, name, value, follow_symlinks=False)
        return
    subprocess.run(["setfattr", "-h", "-n", name, "-v", "0x" + value.hex(), path]
                   if value else ["setfattr", "-h", "-n", name, path], check=True)


def posix_acl(*entries):
    """A system.posix_acl_* value as setfacl passes it to setxattr(2):
    version 2, then (tag, perm, id) entries; id -1 where the tag has none."""
    out = (2).to_bytes(4, "little")
    for tag, perm, ident in entries:
        out += tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + (ident & 0xFFFFFFFF).to_bytes(4, "little")
    return out


def try_chmod(path, mode):
    try:
        os.chmod(path, mode)
    except OSError:
        pass


def fragmented_file(root, rel, size, seed, filler=32 * 1024, fill_limit=None):
    """Write root/rel (size bytes) so that it ends up in many fragments.

    Fill the volume with filler files until ENOSPC (or until fill_limit
    bytes of fillers), delete every other one, write the file, then delete
    the remaining fillers."""
    fill = os.path.join(root, ".fill")
    os.mkdir(fill)
    chunk = b"\xa5" * filler
    names = []
    i = 0
    while fill_limit is None or i * filler < fill_limit:
        p = os.path.join(fill, f"f{i:06d}")
        try:
            with open(p, "wb") as f:
                f.write(chunk)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            try:
                os.unlink(p)
            except OSError:
                pass
            break
        names.append(p)
        i += 1
    os.sync()
    for p in names[0::2]:
        os.unlink(p)
    os.sync()
    data = det_bytes(seed, size)
    with open(os.path.join(root, rel), "wb") as f:
        step = 64 * 1024
        for off in range(0, size, step):
            f.write(data[off:off + step])
        f.flush()
        os.fsync(f.fileno())
    for p in names[1::2]:
        os.unlink(p)
    os.rmdir(fill)
    os.sync()
    return len(names)


def fix_times(root):
    """Give every entry (root included) a fixed, distinct mtime/atime.

    Entries are numbered in sorted path order; this runs last so directory
    mtimes are not disturbed afterwards."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            paths.append(os.path.join(dirpath, n))
    paths.sort()
    paths.insert(0, root)
    for i, p in enumerate(paths):
        ns = (BASE_EPOCH_S + i * 61) * 1_000_000_000 + (i * 1_234_567_00) % 1_000_000_000
        try:
            os.utime(p, ns=(ns, ns), follow_symlinks=False)
        except OSError as e:
            print(f"warning: utime {p}: {e}", flush=True)
