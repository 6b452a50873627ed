#!/usr/bin/env python3
"""Test-only VHD writer, from the Virtual Hard Disk Image Format
Specification (Microsoft, 2006), for what qemu-img cannot make:
differencing disks with parent locators and partial sector bitmaps.

usage: make_vhd.py RAW OUT [--block BYTES] [--uid HEX32]
                   [--parent VHD --parent-raw RAW] [--locators W2ru,W2ku,MacX]
                   [--parent-uid HEX32]

Without --parent: a dynamic disk; blocks of RAW holding any non-zero byte
are stored with every bitmap bit set.  With --parent: a differencing disk
over VHD, whose disk PARENT_RAW is; only sectors of RAW that differ from
PARENT_RAW get their bitmap bit set, and the block's other sectors are
filled with 0xEE so that a reader ignoring the bitmap reads wrong bytes.
The parent's unique id comes from its footer (or --parent-uid, to make a
broken link).  Locators: W2ru is the real relative path, W2ku an absolute
Windows path from another machine (C:\\VMs\\NAME), MacX a file URL of the
real absolute path.
"""
import argparse
import os
import struct
import time
import uuid

SECTOR = 512
VHD_EPOCH = 946684800  # 2000-01-01 00:00:00 UTC


def checksum(buf, skip):
    """One's complement of the byte sum, the checksum field counted as 0."""
    total = sum(buf[:skip]) + sum(buf[skip + 4:])
    return (~total) & 0xFFFFFFFF


def footer(size, disk_type, uid, stamp):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">I", f, 8, 2)  # features: reserved bit
    struct.pack_into(">I", f, 12, 0x00010000)
    struct.pack_into(">Q", f, 16, 512)  # dynamic header offset
    struct.pack_into(">I", f, 24, stamp)
    f[28:32] = b"rfst"
    struct.pack_into(">I", f, 32, 0x00010000)
    f[36:40] = b"Wi2k"
    struct.pack_into(">QQ", f, 40, size, size)
    struct.pack_into(">I", f, 56, 0xFFFF10FF)  # max CHS: size comes from current_size
    struct.pack_into(">I", f, 60, disk_type)
    f[68:84] = uid
    struct.pack_into(">I", f, 64, checksum(f, 64))
    return bytes(f)


def read_footer(path):
    with open(path, "rb") as fh:
        fh.seek(-512, os.SEEK_END)
        f = fh.read(512)
    assert f[:8] == b"conectix", path
    return f[68:84], struct.unpack_from(">I", f, 24)[0]


def utf16le(s):
    return s.encode("utf-16-le")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("out")
    p.add_argument("--block", type=int, default=2 << 20)
    p.add_argument("--uid")
    p.add_argument("--parent")
    p.add_argument("--parent-raw")
    p.add_argument("--parent-uid")
    p.add_argument("--locators", default="W2ru,W2ku,MacX")
    a = p.parse_args()

    data = open(a.raw, "rb").read()
    size = len(data)
    assert size % SECTOR == 0, "RAW must be whole sectors"
    block = a.block
    spb = block // SECTOR
    blocks = (size + block - 1) // block
    uid = bytes.fromhex(a.uid) if a.uid else uuid.uuid4().bytes
    stamp = int(time.time()) - VHD_EPOCH
    base = None
    if a.parent:
        base = open(a.parent_raw, "rb").read()
        assert len(base) == size, "parent and child sizes differ"

    bat_at = 512 + 1024
    bat_len = (blocks * 4 + SECTOR - 1) // SECTOR * SECTOR
    out = bytearray(bat_at + bat_len)

    locs = []
    if a.parent:
        p_uid, p_stamp = read_footer(a.parent)
        if a.parent_uid:
            p_uid = bytes.fromhex(a.parent_uid)
        child_dir = os.path.dirname(os.path.abspath(a.out))
        parent_abs = os.path.abspath(a.parent)
        rel = os.path.relpath(parent_abs, child_dir)
        rel = ".\\" + rel.replace("/", "\\") if not rel.startswith("..") else rel.replace("/", "\\")
        name = os.path.basename(parent_abs)
        datas = {
            "W2ru": utf16le(rel),
            "W2ku": utf16le("C:\\VMs\\" + name),
            "MacX": ("file://localhost" + parent_abs.replace(" ", "%20")).encode(),
        }
        for code in a.locators.split(","):
            if code:
                payload = datas[code]
                at = len(out)
                space = (len(payload) + SECTOR - 1) // SECTOR * SECTOR
                out += payload + b"\0" * (space - len(payload))
                locs.append((code, space, len(payload), at))
    else:
        p_uid, p_stamp, name = b"\0" * 16, 0, ""

    h = bytearray(1024)
    h[0:8] = b"cxsparse"
    struct.pack_into(">Q", h, 8, 0xFFFFFFFFFFFFFFFF)
    struct.pack_into(">Q", h, 16, bat_at)
    struct.pack_into(">I", h, 24, 0x00010000)
    struct.pack_into(">I", h, 28, blocks)
    struct.pack_into(">I", h, 32, block)
    h[40:56] = p_uid
    struct.pack_into(">I", h, 56, p_stamp)
    pname = name.encode("utf-16-be")[:512]
    h[64:64 + len(pname)] = pname
    for i, (code, space, length, at) in enumerate(locs):
        e = 576 + 24 * i
        h[e:e + 4] = code.encode()
        # Data space: Windows writes bytes here, the spec sectors; readers
        # use the length, so follow the spec.
        struct.pack_into(">IIIQ", h, e + 4, space // SECTOR, length, 0, at)
    struct.pack_into(">I", h, 36, checksum(h, 36))

    bitmap_len = ((spb + 7) // 8 + SECTOR - 1) // SECTOR * SECTOR
    bat = []
    for b in range(blocks):
        chunk = data[b * block:(b + 1) * block]
        chunk += b"\0" * (block - len(chunk))
        if base is None:
            held = [any(chunk[s * SECTOR:(s + 1) * SECTOR]) for s in range(spb)]
        else:
            pchunk = base[b * block:(b + 1) * block]
            pchunk += b"\0" * (block - len(pchunk))
            held = [chunk[s * SECTOR:(s + 1) * SECTOR] != pchunk[s * SECTOR:(s + 1) * SECTOR]
                    for s in range(spb)]
        if not any(held):
            bat.append(0xFFFFFFFF)
            continue
        bitmap = bytearray(bitmap_len)
        body = bytearray()
        for s in range(spb):
            if base is None or held[s]:
                bitmap[s // 8] |= 0x80 >> (s % 8)
                body += chunk[s * SECTOR:(s + 1) * SECTOR]
            else:
                body += b"\xee" * SECTOR
        bat.append(len(out) // SECTOR)
        out += bitmap + body

    for i, e in enumerate(bat):
        struct.pack_into(">I", out, bat_at + 4 * i, e)
    for i in range(blocks, bat_len // 4):
        struct.pack_into(">I", out, bat_at + 4 * i, 0xFFFFFFFF)
    f = footer(size, 4 if a.parent else 3, uid, stamp)
    out[0:512] = f
    out[512:1536] = h
    out += f
    with open(a.out, "wb") as fh:
        fh.write(out)


if __name__ == "__main__":
    main()
