#!/usr/bin/env bash
# Fills the Btrfs volume mounted (rw, subvolid=5) at $1 through the kernel:
# an openSUSE-like layout (@, @/home, @/.snapshots/N/snapshot), data under
# zlib, LZO and zstd (compress-force, by remounting), inline, sparse,
# preallocated, reflinked and snapshot-shared extents, a >4 GiB sparse
# file, links, special files, xattrs, ACLs, owners, modes and ns times.
set -euo pipefail
M=$1
btrfs -q subvolume create "$M/@"
btrfs -q subvolume create "$M/@/home"
btrfs -q subvolume create "$M/@/.snapshots"
R="$M/@"
mkdir -p "$R/etc" "$R/home/alice" "$R/var/lib"
echo restored-host > "$R/etc/hostname"
printf 'top-level file\n' > "$M/README"

# Compressed files: a big compressible one, a small one (inline,
# compressed) and an incompressible one per algorithm.
for alg in zlib lzo zstd; do
    mount -o "remount,compress-force=$alg" "$M"
    d="$R/home/alice/$alg"
    mkdir -p "$d"
    seq 1 300000 > "$d/numbers.txt"
    python3 -c "print('x' * 2900 + 'end')" > "$d/small-inline.txt"
    head -c 300000 /dev/urandom > "$d/random.bin"
    python3 - "$d/mixed.bin" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(40):
        f.write(os.urandom(3000) if i % 3 == 0 else (b"%06d " % i) * 700)
PY
    sync
done
mount -o remount,compress=no "$M"

D="$R/home/alice/plain"
mkdir -p "$D"
head -c 5000000 /dev/urandom > "$D/random.bin"
echo tiny > "$D/tiny"
: > "$D/empty"
truncate -s 10M "$D/sparse"
dd if=/dev/urandom of="$D/sparse" bs=4k seek=100 count=3 conv=notrunc status=none
dd if=/dev/urandom of="$D/sparse" bs=1 seek=9000000 count=10 conv=notrunc status=none
truncate -s 5G "$D/big-sparse"
dd if=/dev/urandom of="$D/big-sparse" bs=4k seek=$((4 * 262144 + 5)) count=2 conv=notrunc status=none
dd if=/dev/urandom of="$D/big-sparse" bs=4k count=1 conv=notrunc status=none
fallocate -l 1M "$D/prealloc"
fallocate -l 1M "$D/prealloc-part"
dd if=/dev/urandom of="$D/prealloc-part" bs=4k seek=10 count=2 conv=notrunc status=none
fallocate -o 0 -l 2M -k "$D/tiny" || true
cp --reflink=always "$R/home/alice/zstd/numbers.txt" "$D/reflinked-zstd"
cp --reflink=always "$D/random.bin" "$D/reflinked"
dd if=/dev/zero of="$D/reflinked" bs=4k seek=3 count=1 conv=notrunc status=none
ln -s tiny "$D/link"
ln -s "$(python3 -c "print('/very/long/' + 'x' * 900)")" "$D/long-link"
echo hard > "$D/hard-a"
ln "$D/hard-a" "$D/hard-b"
mkdir -p "$D/sub"
ln "$D/hard-a" "$D/sub/hard-c"
mkfifo "$D/fifo"
mknod "$D/null" c 1 3
mknod "$D/loop200" b 7 200
setfattr -n user.comment -v "restored" "$D/tiny"
setfattr -n user.big -v "$(python3 -c "print('v' * 3000)")" "$D/tiny"
setfattr -n trusted.t -v 1 "$D/empty"
setfacl -m u:1000:rwx,g:100:r "$D/random.bin"
setfacl -d -m u:1000:rx "$D/sub"
chown 1000:100 "$D/random.bin"
chmod 4755 "$D/tiny"
chmod 1777 "$D/sub"
mkdir -p "$R/var/lib/many"
for i in $(seq 1 3000); do : > "$R/var/lib/many/entry-with-a-long-name-$i"; done
touch -h -d '2001-02-03 04:05:06.123456789' "$D/link"
touch -d '1969-07-20 20:17:40.5' "$D/empty"

# Snapshots: snapper-like, read-only of @/home, writable of @ (whose
# nested subvolumes show as empty stubs), then changes after them.
mkdir -p "$R/.snapshots/1" "$R/.snapshots/2"
btrfs -q subvolume snapshot -r "$R/home" "$R/.snapshots/1/snapshot"
btrfs -q subvolume snapshot "$R" "$R/.snapshots/2/snapshot"
echo changed >> "$R/home/alice/zstd/numbers.txt"
rm "$R/home/alice/plain/reflinked"
echo new > "$R/.snapshots/2/snapshot/etc/new-in-snapshot"
btrfs -q subvolume set-default "$R" 
sync
