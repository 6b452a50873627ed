#!/usr/bin/env python3
"""Make a volume copy look as if no journal checkpoint had happened.

usage: debugfs -R 'logdump -a' DIRTY | crashimage.py BASE DIRTY BLOCK_SIZE

BASE is the volume before the journaled changes (cleanly unmounted), DIRTY
a copy taken while the changes were committed to the journal.  Between the
commits and the copy the kernel may already have written some metadata to
its home locations (writeback, or a sync(2) by any process on the machine),
which would hide those changes from a reader that ignores the journal.

Every filesystem block the journal will replay -- logged in a committed
transaction that `logdump` lists, and never named in a revoke record -- gets BASE's
bytes back in DIRTY.  Replay overwrites exactly those blocks, so the
recovered filesystem is unchanged; only the unreplayed view goes back to
the state before the changes, the state of a crash right after the last
commit with no checkpoint.  The block holding the primary superblock keeps
DIRTY's bytes (its needs_recovery flag); revoked blocks keep DIRTY's bytes
(they may hold newer unjournaled data).
"""
import re
import sys

BLOCK = re.compile(r"^Found expected sequence (\d+), type (\d+) ")
LOGGED = re.compile(r"^\s*FS block (\d+) logged at journal block \d+ \(flags 0x[0-9a-f]+\)")
REVOKED = re.compile(r"^\s*Revoke FS block (\d+)")
COMMIT = 2


def main():
    base_path, dirty_path, bs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logged, revoked, pending = set(), set(), set()
    seq = None
    commits = 0
    for line in sys.stdin:
        if m := BLOCK.match(line):
            if int(m.group(1)) != seq:
                pending = set()  # a transaction without its commit block
                seq = int(m.group(1))
            if int(m.group(2)) == COMMIT:
                logged |= pending
                pending = set()
                commits += 1
        elif m := LOGGED.match(line):
            pending.add(int(m.group(1)))
        elif m := REVOKED.match(line):
            revoked.add(int(m.group(1)))
    sb_block = 1024 // bs
    todo = sorted(logged - revoked - {sb_block})
    if not todo:
        sys.exit("crashimage.py: the journal logs no blocks")
    written = 0
    with open(base_path, "rb") as base, open(dirty_path, "r+b") as dirty:
        for b in todo:
            base.seek(b * bs)
            old = base.read(bs)
            dirty.seek(b * bs)
            if dirty.read(bs) != old:
                written += 1
                dirty.seek(b * bs)
                dirty.write(old)
    print(f"crashimage.py: {commits} commits, {len(logged)} blocks logged, {len(revoked)} revoked; "
          f"{written} of the {len(todo)} replayed ones had reached their home "
          "location and were put back", file=sys.stderr)


if __name__ == "__main__":
    main()
