#!/usr/bin/env bash
# Builds an LVM2 test disk without device-mapper: PVs and the VG are made by
# pvcreate/vgcreate on loop devices, the LVs are added to a vgcfgbackup text
# and put back with vgcfgrestore, and ext4 images are written into each LV's
# extents at the places LVM's own `lvs`/`pvs` report.
#
# Usage: make-lvm-disk.sh OUTDIR
# Leaves OUTDIR/disk.img, OUTDIR/<dm-name>.fs (expected LV bytes),
# OUTDIR/segments.txt (lvs' view), OUTDIR/p3-old-mda.bin (p3's metadata area
# before the last metadata change) and OUTDIR/stamp.
set -euo pipefail
shopt -s extglob
out=$1
mkdir -p "$out"
cd "$out"
rm -f disk.img ./*.fs stamp
loops=()
cleanup() {
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
}
trap cleanup EXIT

# A private LVM config: no devices file, no backups in /etc/lvm.
mkdir -p lvmconf
printf 'devices { use_devicesfile = 0 }\nbackup { backup = 0\narchive = 0 }\n' >lvmconf/lvm.conf
export LVM_SYSTEM_DIR=$PWD/lvmconf
export LVM_SUPPRESS_FD_WARNINGS=1

truncate -s 64M disk.img
# p1 plain, p2 and p3 PVs (p2 with two metadata areas).
printf 'label: gpt\nstart=2048, size=16384\nstart=18432, size=40960\nstart=59392, size=69632\n' |
    sfdisk -q disk.img
l2=$(losetup -f --show -o $((18432 * 512)) --sizelimit $((40960 * 512)) disk.img)
loops+=("$l2")
l3=$(losetup -f --show -o $((59392 * 512)) --sizelimit $((69632 * 512)) disk.img)
loops+=("$l3")
devs=(--devices "$l2,$l3")
vg=rfs-test

pvcreate -q "${devs[@]}" --pvmetadatacopies 2 "$l2"
pvcreate -q "${devs[@]}" "$l3"
vgcreate -q "${devs[@]}" -s 1M "$vg" "$l2" "$l3"
vgcfgbackup -q "${devs[@]}" -f vg.txt "$vg"

uuid() { head -c 200 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 32 | sed -E 's/^(.{6})(.{4})(.{4})(.{4})(.{4})(.{4})(.{6})$/\1-\2-\3-\4-\5-\6-\7/'; }
seg() { # n start count pv pe
    printf '\t\t\tsegment%s {\n\t\t\t\tstart_extent = %s\n\t\t\t\textent_count = %s\n\t\t\t\ttype = "striped"\n\t\t\t\tstripe_count = 1\n\t\t\t\tstripes = [\n\t\t\t\t\t"%s", %s\n\t\t\t\t]\n\t\t\t}\n' "$@"
}
lv() { # name status segment_count
    printf '\t\t%s {\n\t\t\tid = "%s"\n\t\t\tstatus = [%s]\n\t\t\tflags = []\n\t\t\tsegment_count = %s\n' "$1" "$(uuid)" "$2" "$3"
}
rw='"READ", "WRITE", "VISIBLE"'
{
    printf '\tlogical_volumes {\n'
    # Linear, with a '-' in its name (dm name doubles it).
    lv lin-ear "$rw" 1; seg 1 0 4 pv0 0; printf '\t\t}\n'
    # Three segments over both PVs, their extents out of order on the PVs.
    # (vgcfgrestore wants the segments listed in LV order; the parser's own
    # sorting is tested by rewriting the metadata.)
    lv multi "$rw" 3
    seg 1 0 2 pv1 10; seg 2 2 2 pv0 4; seg 3 4 2 pv1 0
    printf '\t\t}\n'
    # Two stripes of 64 KiB chunks.
    lv stripes "$rw" 1
    printf '\t\t\tsegment1 {\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = 4\n\t\t\t\ttype = "striped"\n\t\t\t\tstripe_count = 2\n\t\t\t\tstripe_size = 128\n\t\t\t\tstripes = [\n\t\t\t\t\t"pv0", 6,\n\t\t\t\t\t"pv1", 2\n\t\t\t\t]\n\t\t\t}\n'
    printf '\t\t}\n'
    # A thin pool (data and metadata hidden) with one thin volume.
    lv pool "$rw" 1
    printf '\t\t\tsegment1 {\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = 2\n\t\t\t\ttype = "thin-pool"\n\t\t\t\tmetadata = "pool_tmeta"\n\t\t\t\tpool = "pool_tdata"\n\t\t\t\ttransaction_id = 1\n\t\t\t\tchunk_size = 128\n\t\t\t\tdiscards = "passdown"\n\t\t\t\tzero_new_blocks = 1\n\t\t\t}\n'
    printf '\t\t}\n'
    lv thin1 "$rw" 1
    printf '\t\t\tsegment1 {\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = 8\n\t\t\t\ttype = "thin"\n\t\t\t\tthin_pool = "pool"\n\t\t\t\ttransaction_id = 0\n\t\t\t\tdevice_id = 1\n\t\t\t}\n'
    printf '\t\t}\n'
    lv pool_tdata '"READ", "WRITE"' 1; seg 1 0 2 pv1 12; printf '\t\t}\n'
    lv pool_tmeta '"READ", "WRITE"' 1; seg 1 0 1 pv1 14; printf '\t\t}\n'
    printf '\t}\n'
} >lvs.txt
# The VG section closes at the file's last top-level '}'.
last=$(grep -n '^}' vg.txt | tail -1 | cut -d: -f1)
{ head -n $((last - 1)) vg.txt; cat lvs.txt; tail -n +"$last" vg.txt; } >vg-lvs.txt
vgcfgrestore -q "${devs[@]}" --force -f vg-lvs.txt "$vg"

ext=$(vgs "${devs[@]}" --noheadings --units b --nosuffix -o vg_extent_size "$vg" | tr -d ' ')
lvs "${devs[@]}" -a --noheadings --segments --units b --nosuffix --separator '|' \
    -o lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges,segtype "$vg" |
    sed 's/^ *//' >segments.txt
declare -A pe_start
while IFS='|' read -r dev start; do
    pe_start[$dev]=$start
done < <(pvs "${devs[@]}" --noheadings --units b --nosuffix --separator '|' -o pv_name,pe_start | sed 's/^ *//')

# Each readable LV gets its own ext4, written extent by extent (chunk by
# chunk when striped) where lvs says its segments are.
for name in lin-ear multi stripes; do
    size=$(awk -F'|' -v n="$name" -v e="$ext" '$1 == n { s += $3 } END { print s * e }' segments.txt)
    dm="${vg//-/--}-${name//-/--}"
    rm -rf src && mkdir -p src/dir
    echo "hello from $name" >src/hello.txt
    head -c 300000 /dev/urandom >src/dir/random.bin
    truncate -s "$size" "$dm.fs"
    mkfs.ext4 -q -F -L "$name" -d src "$dm.fs"
    while IFS='|' read -r lvn sstart scount stripes ssize ranges segtype; do
        [ "$lvn" = "$name" ] || continue
        [[ "$segtype" == @(striped|linear) ]] || { echo "unexpected $segtype" >&2; exit 1; }
        read -ra rs <<<"$ranges"
        seg_off=$((sstart * ext))
        seg_len=$((scount * ext))
        chunk=$((stripes > 1 ? ssize : seg_len))
        for ((c = 0; c * chunk < seg_len; c++)); do
            r=${rs[c % stripes]}
            dev=${r%%:*}
            pe=${r#*:}
            pe=${pe%%-*}
            dst=$((pe_start[$dev] + pe * ext + (c / stripes) * chunk))
            dd if="$dm.fs" of="$dev" bs=64K iflag=skip_bytes,count_bytes oflag=seek_bytes \
                skip=$((seg_off + c * chunk)) seek=$dst count=$chunk conv=notrunc status=none
        done
    done <segments.txt
done
sync

# A metadata change after a copy of p3's metadata area is kept, so the tests
# can put the stale copy back and check that the newest seqno wins.
dd if="$l3" of=p3-old-mda.bin bs=4096 skip=1 count=255 status=none
vgchange -q "${devs[@]}" --addtag newest "$vg" >/dev/null
vgs "${devs[@]}" --noheadings -o vg_seqno "$vg" | tr -d ' ' >seqno.txt
sync
touch stamp
