# Shared bash helpers for scripts/gen-testimages and scripts/make-demo.
# Sourced, not executed.  Needs: set -euo pipefail in the caller.

TI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONDONTWRITEBYTECODE=1

TI_LOOPS=()    # loop devices we attached
TI_MOUNTS=()   # mount points we mounted
declare -A TI_FUSEPID=()  # mount point -> ntfs-3g pid (ran with no_detach)

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

_ti_remove() { # NAME VALUE: drop VALUE from array NAME
    local -n arr=$1; local out=() x
    for x in "${arr[@]}"; do [[ $x == "$2" ]] || out+=("$x"); done
    arr=("${out[@]}")
}

ti_cleanup() {
    set +e
    local i m
    for ((i=${#TI_MOUNTS[@]}-1; i>=0; i--)); do
        m=${TI_MOUNTS[i]}
        if mountpoint -q "$m"; then umount "$m" || umount -l "$m"; fi
        if [[ -n ${TI_FUSEPID[$m]:-} ]]; then wait "${TI_FUSEPID[$m]}" 2>/dev/null; fi
    done
    TI_MOUNTS=()
    for ((i=${#TI_LOOPS[@]}-1; i>=0; i--)); do
        losetup -d "${TI_LOOPS[i]}" 2>/dev/null
    done
    TI_LOOPS=()
}

# loop_attach IMG START_LBA SECTORS [ro]  -> sets $LOOPDEV
loop_attach() {
    local args=(--find --show -o $(( $2 * 512 )) --sizelimit $(( $3 * 512 )))
    [[ ${4:-} == ro ]] && args+=(-r)
    LOOPDEV=$(losetup "${args[@]}" "$1")
    TI_LOOPS+=("$LOOPDEV")
}

loop_detach() {
    sync
    losetup -d "$1"
    _ti_remove TI_LOOPS "$1"
}

# mount_vol FS DEV MNT OPTS   (FS: ext2|ext3|ext4|xfs|ntfs; OPTS: rw[,...]|ro:
#   ro is the reference reader's fixed options; rw may add options)
mount_vol() {
    local fs=$1 dev=$2 mnt=$3 mode=$4 pid i
    mkdir -p "$mnt"
    if [[ $fs == ntfs ]]; then
        local opts=no_detach,streams_interface=xattr
        if [[ $mode == ro ]]; then
            # The reference reader's options.
            opts=no_detach,ro,uid=0,gid=0,fmask=0133,dmask=0022,streams_interface=xattr
        else
            opts+=,big_writes${mode#rw}
        fi
        ntfs-3g -o "$opts" "$dev" "$mnt" >/dev/null 2>"$mnt.ntfs-3g.log" &
        pid=$!
        TI_FUSEPID[$mnt]=$pid
        TI_MOUNTS+=("$mnt")
        for ((i=0; i<100; i++)); do
            mountpoint -q "$mnt" && break
            kill -0 "$pid" 2>/dev/null || { cat "$mnt.ntfs-3g.log" >&2; die "ntfs-3g failed on $dev"; }
            sleep 0.05
        done
        mountpoint -q "$mnt" || die "ntfs-3g did not mount $dev"
    else
        mount -t "$fs" -o "$mode" "$dev" "$mnt"
        TI_MOUNTS+=("$mnt")
    fi
}

umount_vol() {
    local mnt=$1
    sync
    umount "$mnt"
    if [[ -n ${TI_FUSEPID[$mnt]:-} ]]; then
        # ntfs-3g finishes writing after umount returns: wait for it to exit.
        wait "${TI_FUSEPID[$mnt]}" || die "ntfs-3g on $mnt exited with an error"
        unset 'TI_FUSEPID[$mnt]'
        rm -f "$mnt.ntfs-3g.log"
    fi
    _ti_remove TI_MOUNTS "$mnt"
    rmdir "$mnt"
}

# mkfs_vol FS DEV LABEL START_LBA [extra mkfs args...]
mkfs_vol() {
    local fs=$1 dev=$2 label=$3 start=$4; shift 4
    case $fs in
        ntfs) mkntfs -Q -F -q -L "$label" -s 512 -p "$start" -H 255 -S 63 "$@" "$dev" ;;
        ext2|ext3|ext4) "mkfs.$fs" -q -F -L "$label" -E lazy_itable_init=0,lazy_journal_init=0 "$@" "$dev" ;;
        xfs) mkfs.xfs -q -f -L "$label" "$@" "$dev" ;;
        vfat) mkfs.vfat -F 32 -n "$label" -h "$start" "$@" "$dev" >/dev/null ;;
        *) die "mkfs_vol: unknown fs $fs" ;;
    esac
}

# check_blkid DEV FS LABEL: blkid -p must agree with what we made.
check_blkid() {
    local out type label
    out=$(blkid -p -o export "$1") || die "blkid -p found nothing on $1"
    type=$(sed -n 's/^TYPE=//p' <<<"$out")
    label=$(sed -n 's/^LABEL=//p' <<<"$out")
    [[ $type == "$2" ]] || die "blkid: $1 is '$type', expected '$2'"
    [[ $label == "$3" ]] || die "blkid: $1 label '$label', expected '$3'"
}

# populate IMG START SECTORS FS LABEL WORK [MKFS_ARGS...] -- TREE_CMD...
#   mkfs + rw mount (plus the options in $TI_RW_OPTS) + run TREE_CMD with
#   the mount point appended + unmount
populate() {
    local img=$1 start=$2 n=$3 fs=$4 label=$5 work=$6; shift 6
    local mkfs_args=()
    while [[ $# -gt 0 && $1 != -- ]]; do mkfs_args+=("$1"); shift; done
    shift
    loop_attach "$img" "$start" "$n"
    local dev=$LOOPDEV mnt=$work/mnt-rw
    mkfs_vol "$fs" "$dev" "$label" "$start" "${mkfs_args[@]}"
    mount_vol "$fs" "$dev" "$mnt" "rw${TI_RW_OPTS:+,$TI_RW_OPTS}"
    "$@" "$mnt"
    umount_vol "$mnt"
    loop_detach "$dev"
}

# write_manifest IMG START SECTORS FS LABEL OUT.jsonl WORK [BIGFILE [LOOPMODE]]
#   read-only loop + blkid check + reference-reader mount + manifest.py
#   LOOPMODE rw: a writable loop device (still mounted ro), so that the
#   kernel can replay an ext3/ext4 journal (only ever on a scratch copy).
write_manifest() {
    local img=$1 start=$2 n=$3 fs=$4 label=$5 out=$6 work=$7 big=${8:-} lmode=${9:-ro}
    loop_attach "$img" "$start" "$n" "$lmode"
    local dev=$LOOPDEV mnt=$work/mnt-ro
    check_blkid "$dev" "$fs" "$label"
    mount_vol "$fs" "$dev" "$mnt" ro
    python3 "$TI_DIR/manifest.py" "$mnt" >"$out"
    if [[ -n $big && $fs == ext* ]]; then
        local ext
        ext=$(filefrag "$mnt$big" | sed -n 's/.*: \([0-9]*\) extents\? found/\1/p')
        log "  $big: $ext extents (filefrag)"
        [[ $ext -ge 16 ]] || die "$big has only $ext extents"
    fi
    umount_vol "$mnt"
    if [[ -n $big && $fs == ntfs ]]; then
        local runs
        runs=$(ntfsinfo -v -F "$big" "$dev" 2>/dev/null | sed -n 's/.*Total runs: \([0-9]*\).*/\1/p' | tail -1)
        log "  $big: $runs data runs (ntfsinfo)"
        [[ ${runs:-0} -ge 8 ]] || die "$big has only ${runs:-0} data runs"
    fi
    loop_detach "$dev"
    log "  manifest $(basename "$out"): $(wc -l <"$out") entries"
}
