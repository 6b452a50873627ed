#!/usr/bin/env python3
r"""Test-only VHDX writer, from [MS-VHDX], for layouts qemu-img cannot make
(4096-byte logical sectors, sector-bitmap entries inside the BAT, parents).

usage: make_vhdx.py RAW OUT [--block MiB] [--logical 512|4096]
                    [--physical 512|4096] [--data-write-guid GUID]
                    [--parent VHDX --parent-raw RAW [--linkage GUID]
                     [--locators KEY,...]]

Blocks of RAW holding data (found with SEEK_DATA, so RAW may be sparse) are
stored FULLY_PRESENT; the others alternate NOT_PRESENT and ZERO.

With --parent: a differencing disk over VHDX, whose disk PARENT_RAW is.
Per payload block, comparing logical sectors of RAW and PARENT_RAW: none
differ -> NOT_PRESENT (every third one UNDEFINED); all differ and all of
RAW's are zero -> ZERO; all differ -> FULLY_PRESENT; some -> PARTIALLY_PRESENT
with the differing sectors' bits set in the chunk's sector bitmap block
(bit n % 8 of byte n / 8) and 0xEE in the others, so a reader that ignores
the bitmap reads wrong bytes.  The parent locator has parent_linkage (the
parent's data write GUID, or --linkage to break the link) and the keys of
--locators: relative_path (the real one), absolute_win32_path (from another
machine: C:\VMs\NAME) and volume_path.
"""
import argparse
import os
import struct
import uuid

MIB = 1 << 20
POLY = 0x82F63B78
TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def guid(s):
    return uuid.UUID(s).bytes_le


def with_crc(buf):
    buf = bytearray(buf)
    buf[4:8] = b"\0" * 4
    buf[4:8] = struct.pack("<I", crc32c(bytes(buf)))
    return bytes(buf)


def data_blocks(fd, size, block):
    """Indexes of blocks of the raw file that hold data."""
    found = set()
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        for b in range(start // block, (end - 1) // block + 1):
            found.add(b)
        pos = end
    return found


def data_write_guid(path):
    """The data write GUID of the current header of the VHDX at PATH."""
    with open(path, "rb") as f:
        best = None
        for at in (64 * 1024, 128 * 1024):
            f.seek(at)
            h = f.read(4096)
            if h[:4] != b"head":
                continue
            seq = struct.unpack_from("<Q", h, 8)[0]
            if best is None or seq > best[0]:
                best = (seq, h[32:48])
    return str(uuid.UUID(bytes_le=best[1])).upper()


def write_headers(out, data_write):
    for seq, at in ((1, 64 * 1024), (2, 128 * 1024)):
        h = bytearray(4096)
        h[0:4] = b"head"
        struct.pack_into("<Q", h, 8, seq)
        h[16:32] = uuid.uuid4().bytes
        h[32:48] = data_write
        struct.pack_into("<HHIQ", h, 64, 0, 1, MIB, MIB)
        out.seek(at)
        out.write(with_crc(h))


def write_regions(out, bat_off, bat_len, meta_off):
    rt = bytearray(64 * 1024)
    rt[0:4] = b"regi"
    struct.pack_into("<I", rt, 8, 2)
    rt[16:32] = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
    struct.pack_into("<QII", rt, 32, bat_off, bat_len, 1)
    rt[48:64] = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
    struct.pack_into("<QII", rt, 64, meta_off, MIB, 1)
    for at in (192 * 1024, 256 * 1024):
        out.seek(at)
        out.write(with_crc(rt))


def locator(pairs):
    head = bytearray(20 + 12 * len(pairs))
    head[0:16] = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")
    struct.pack_into("<HH", head, 16, 0, len(pairs))
    strings = b""
    for i, (k, v) in enumerate(pairs):
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        ko = len(head) + len(strings)
        strings += kb
        vo = len(head) + len(strings)
        strings += vb
        struct.pack_into("<IIHH", head, 20 + 12 * i, ko, vo, len(kb), len(vb))
    return bytes(head) + strings


def write_metadata(out, meta_off, block, size, logical, physical, parent_pairs):
    items = [
        ("CAA16737-FA36-4D43-B3B6-33F0AA44E76B", 4,
         struct.pack("<II", block, 2 if parent_pairs else 0)),
        ("2FA54224-CD1B-4876-B211-5DBED83BF4B8", 6, struct.pack("<Q", size)),
        ("BECA12AB-B2E6-4523-93EF-C309E000C746", 6, uuid.uuid4().bytes_le),
        ("8141BF1D-A96F-4709-BA47-F233A8FAAB5F", 6, struct.pack("<I", logical)),
        ("CDA348C7-445D-4471-9CC9-E9885251C556", 6, struct.pack("<I", physical)),
    ]
    if parent_pairs:
        items.append(("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", 4, locator(parent_pairs)))
    mt = bytearray(64 * 1024)
    mt[0:8] = b"metadata"
    struct.pack_into("<H", mt, 10, len(items))
    item_off = 64 * 1024
    blob = b""
    for i, (g, flags, data) in enumerate(items):
        e = 32 + 32 * i
        mt[e:e + 16] = guid(g)
        struct.pack_into("<III", mt, e + 16, item_off + len(blob), len(data), flags)
        blob += data
    out.seek(meta_off)
    out.write(bytes(mt) + blob)


def differencing(a):
    block = a.block * MIB
    data = open(a.raw, "rb").read()
    base = open(a.parent_raw, "rb").read()
    size = len(data)
    assert len(base) == size, "parent and child sizes differ"
    ss = a.logical
    spb = block // ss
    nblocks = (size + block - 1) // block
    ratio = (1 << 23) * ss // block
    chunks = (nblocks + ratio - 1) // ratio
    entries = nblocks + chunks  # a bitmap entry closes every chunk
    bat_len = (entries * 8 + MIB - 1) // MIB * MIB
    meta_off, bat_off = 2 * MIB, 3 * MIB
    next_off = bat_off + bat_len

    linkage = a.linkage or data_write_guid(a.parent)
    parent_abs = os.path.abspath(a.parent)
    rel = os.path.relpath(parent_abs, os.path.dirname(os.path.abspath(a.out)))
    name = os.path.basename(parent_abs)
    values = {
        "relative_path": rel.replace("/", "\\"),
        "absolute_win32_path": "C:\\VMs\\" + name,
        "volume_path": "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\VMs\\" + name,
    }
    pairs = [("parent_linkage", "{%s}" % linkage.lower())]
    pairs += [(k, values[k]) for k in a.locators.split(",") if k]

    out = open(a.out, "wb")
    out.write(b"vhdxfile" + "restorefs test".encode("utf-16-le"))
    dw = uuid.UUID(a.data_write_guid).bytes_le if a.data_write_guid else uuid.uuid4().bytes_le
    write_headers(out, dw)
    write_regions(out, bat_off, bat_len, meta_off)
    write_metadata(out, meta_off, block, size, a.logical, a.physical, pairs)

    bat = bytearray(bat_len)
    bitmaps = {}  # chunk -> bytearray(1 MiB)
    for b in range(nblocks):
        idx = b + b // ratio
        lo = b * block
        chunk = data[lo:lo + block].ljust(block, b"\0")
        pchunk = base[lo:lo + block].ljust(block, b"\0")
        diff = [chunk[s * ss:(s + 1) * ss] != pchunk[s * ss:(s + 1) * ss] for s in range(spb)]
        if not any(diff):
            state = 1 if b % 3 == 2 else 0
        elif all(diff) and chunk.count(0) == block:
            state = 2
        else:
            partial = not all(diff)
            body = bytearray(chunk)
            if partial:
                bm = bitmaps.setdefault(b // ratio, bytearray(MIB))
                first = (b % ratio) * spb
                for s in range(spb):
                    if diff[s]:
                        n = first + s
                        bm[n // 8] |= 1 << (n % 8)
                    else:
                        body[s * ss:(s + 1) * ss] = b"\xee" * ss
            out.seek(next_off)
            out.write(bytes(body))
            state = (7 if partial else 6) | next_off
            next_off += block
        struct.pack_into("<Q", bat, idx * 8, state)
    for c, bm in bitmaps.items():
        out.seek(next_off)
        out.write(bytes(bm))
        idx = c * (ratio + 1) + ratio
        struct.pack_into("<Q", bat, idx * 8, 6 | next_off)
        next_off += MIB
    out.seek(bat_off)
    out.write(bytes(bat))
    out.truncate(next_off)
    out.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("out")
    p.add_argument("--block", type=int, default=1)
    p.add_argument("--logical", type=int, default=512)
    p.add_argument("--physical", type=int, default=4096)
    p.add_argument("--parent")
    p.add_argument("--parent-raw")
    p.add_argument("--linkage")
    p.add_argument("--data-write-guid")
    p.add_argument("--locators", default="relative_path,absolute_win32_path,volume_path")
    a = p.parse_args()
    if a.parent:
        return differencing(a)
    block = a.block * MIB
    size = os.path.getsize(a.raw)
    nblocks = (size + block - 1) // block
    ratio = (1 << 23) * a.logical // block
    entries = nblocks + (nblocks - 1) // ratio
    bat_len = (entries * 8 + MIB - 1) // MIB * MIB
    meta_off, bat_off = 2 * MIB, 3 * MIB
    payload = bat_off + bat_len

    rfd = os.open(a.raw, os.O_RDONLY)
    present = data_blocks(rfd, size, block)
    out = open(a.out, "wb")
    out.write(b"vhdxfile" + "restorefs test".encode("utf-16-le"))

    log_guid = b"\0" * 16
    for seq, at in ((1, 64 * 1024), (2, 128 * 1024)):
        h = bytearray(4096)
        h[0:4] = b"head"
        struct.pack_into("<Q", h, 8, seq)
        h[16:32] = uuid.uuid4().bytes
        h[32:48] = uuid.uuid4().bytes
        h[48:64] = log_guid
        struct.pack_into("<HHIQ", h, 64, 0, 1, MIB, MIB)
        out.seek(at)
        out.write(with_crc(h))

    rt = bytearray(64 * 1024)
    rt[0:4] = b"regi"
    struct.pack_into("<I", rt, 8, 2)
    rt[16:32] = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
    struct.pack_into("<QII", rt, 32, bat_off, bat_len, 1)
    rt[48:64] = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
    struct.pack_into("<QII", rt, 64, meta_off, MIB, 1)
    for at in (192 * 1024, 256 * 1024):
        out.seek(at)
        out.write(with_crc(rt))

    items = [
        ("CAA16737-FA36-4D43-B3B6-33F0AA44E76B", 4,
         struct.pack("<II", block, 2 if a.parent else 0)),
        ("2FA54224-CD1B-4876-B211-5DBED83BF4B8", 6, struct.pack("<Q", size)),
        ("BECA12AB-B2E6-4523-93EF-C309E000C746", 6, uuid.uuid4().bytes_le),
        ("8141BF1D-A96F-4709-BA47-F233A8FAAB5F", 6, struct.pack("<I", a.logical)),
        ("CDA348C7-445D-4471-9CC9-E9885251C556", 6, struct.pack("<I", a.physical)),
    ]
    if a.parent:
        pairs = [("parent_linkage", "{%s}" % uuid.uuid4()), ("relative_path", a.parent)]
        head = bytearray(20 + 12 * len(pairs))
        head[0:16] = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")
        struct.pack_into("<HH", head, 16, 0, len(pairs))
        strings = b""
        for i, (k, v) in enumerate(pairs):
            kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
            ko = len(head) + len(strings)
            strings += kb
            vo = len(head) + len(strings)
            strings += vb
            struct.pack_into("<IIHH", head, 20 + 12 * i, ko, vo, len(kb), len(vb))
        items.append(("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", 4, bytes(head) + strings))
    mt = bytearray(64 * 1024)
    mt[0:8] = b"metadata"
    struct.pack_into("<H", mt, 10, len(items))
    item_off = 64 * 1024
    blob = b""
    for i, (g, flags, data) in enumerate(items):
        e = 32 + 32 * i
        mt[e:e + 16] = guid(g)
        struct.pack_into("<III", mt, e + 16, item_off + len(blob), len(data), flags)
        blob += data
    out.seek(meta_off)
    out.write(bytes(mt) + blob)

    bat = bytearray(bat_len)
    next_off = payload
    for b in range(nblocks):
        idx = b + b // ratio
        if b in present:
            state = 6 | next_off
            n = min(block, size - b * block)
            # Piecewise, leaving zero pieces as holes so big blocks stay cheap.
            for at in range(0, n, MIB):
                piece = os.pread(rfd, min(MIB, n - at), b * block + at)
                if piece.count(0) != len(piece):
                    out.seek(next_off + at)
                    out.write(piece)
            next_off += block
        else:
            state = 2 if b % 2 else 0
        struct.pack_into("<Q", bat, idx * 8, state)
    out.seek(bat_off)
    out.write(bytes(bat))
    out.truncate(max(next_off, payload))
    out.close()


if __name__ == "__main__":
    main()
