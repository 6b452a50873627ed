#!/usr/bin/env python3
"""Partition-table helpers for gen-testimages, based on `sfdisk -J`.

  layout.py parts DISK
      print "NUM START SECTORS TYPE" for every partition (from sfdisk -J)
  layout.py check DISK TABLE NUM:TYPE[:SECTORS] ...
      fail unless sfdisk sees exactly these partitions with these types
  layout.py write DISK TABLE OUT NAME:FS:LABEL ... [--primary-damaged]
      write layout.json; for TABLE=none one volume NAME covering the file
  layout.py gpt-damage DISK      overwrite LBA 1 with garbage and verify
  layout.py lvm LAYOUT PV VGS_JSON LVS_JSON NAME:FS:LABEL:SHA256 ...
      add "lvm" to LAYOUT: the VG and, per LV, its segments (on volume PV) as
      `vgs/lvs --reportformat json` reported them, plus what the generator
      put in it (fs, label, sha256 of the LV's bytes)
"""
import binascii
import json
import os
import random
import struct
import subprocess
import sys

GPT_CODES = {
    "0700": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    "8300": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "EF00": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "EF02": "21686148-6449-6E6F-744E-656564454649",
    "8E00": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
    "0C01": "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
    "2700": "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",
}


def die(msg):
    print(f"layout.py: {msg}", file=sys.stderr)
    sys.exit(1)


def sfdisk_json(disk):
    d = os.path.dirname(os.path.abspath(disk))
    r = subprocess.run(["sfdisk", "-J", os.path.basename(disk)], cwd=d,
                       capture_output=True, text=True)
    if r.returncode != 0:
        die(f"sfdisk -J {disk} failed: {r.stderr}")
    return json.loads(r.stdout)["partitiontable"]


def part_num(node):
    i = len(node)
    while i > 0 and node[i - 1].isdigit():
        i -= 1
    return int(node[i:])


def type_str(table, t):
    if table == "gpt":
        return t.upper()
    return f"0x{int(t, 16):02x}"


def parts(pt):
    out = []
    for p in pt.get("partitions", []):
        out.append((part_num(p["node"]), p["start"], p["size"], type_str(pt["label"] if pt["label"] == "gpt" else "mbr", p["type"]), p))
    return out


def cmd_parts(disk):
    for n, s, z, t, _ in parts(sfdisk_json(disk)):
        print(n, s, z, t)


def cmd_check(disk, table, specs):
    pt = sfdisk_json(disk)
    want_label = {"gpt": "gpt", "mbr": "dos"}[table]
    if pt["label"] != want_label:
        die(f"{disk}: table is {pt['label']}, expected {want_label}")
    got = {n: (s, z, t) for n, s, z, t, _ in parts(pt)}
    want = {}
    for sp in specs:
        f = sp.split(":")
        n = int(f[0])
        t = GPT_CODES[f[1].upper()] if table == "gpt" else f"0x{int(f[1], 16):02x}"
        want[n] = (t, int(f[2]) if len(f) > 2 else None)
    if sorted(got) != sorted(want):
        die(f"{disk}: partitions {sorted(got)} != expected {sorted(want)}")
    for n, (t, z) in want.items():
        if got[n][2] != t:
            die(f"{disk}: p{n} type {got[n][2]} != {t}")
        if z is not None and got[n][1] != z:
            die(f"{disk}: p{n} has {got[n][1]} sectors, expected {z}")
    print(f"layout.py: {disk}: {len(got)} partitions as intended")


def cmd_write(disk, table, out, specs, damaged):
    vols = []
    layout = {"table": table, "sector_size": 512,
              "disk_sectors": os.path.getsize(disk) // 512}
    if table == "none":
        name, fs, label = specs[0].split(":", 2)
        vols.append({"name": name, "start_lba": 0, "sectors": layout["disk_sectors"],
                     "type": None, "fs": fs, "label": label or None})
    else:
        pt = sfdisk_json(disk)
        layout["sfdisk"] = pt
        info = {}
        for sp in specs:
            name, fs, label = sp.split(":", 2)
            info[name] = (fs or None, label or None)
        for n, s, z, t, p in parts(pt):
            name = f"p{n}"
            if name not in info:
                die(f"no fs/label given for {name}")
            fs, label = info.pop(name)
            v = {"name": name, "start_lba": s, "sectors": z, "type": t, "fs": fs, "label": label}
            if table == "gpt":
                v["part_uuid"] = p.get("uuid")
                v["part_name"] = p.get("name")
            vols.append(v)
        if info:
            die(f"volumes {sorted(info)} not in the table")
    layout["volumes"] = vols
    if damaged:
        layout["primary_damaged"] = True
    with open(out, "w") as f:
        json.dump(layout, f, indent=2, ensure_ascii=False)
        f.write("\n")


def gpt_header_ok(buf):
    if buf[:8] != b"EFI PART":
        return False
    hsize = struct.unpack_from("<I", buf, 12)[0]
    crc = struct.unpack_from("<I", buf, 16)[0]
    h = bytearray(buf[:hsize])
    h[16:20] = b"\0\0\0\0"
    return binascii.crc32(bytes(h)) == crc


def cmd_gpt_damage(disk):
    size = os.path.getsize(disk)
    last = size // 512 - 1
    with open(disk, "r+b") as f:
        f.seek(512)
        if not gpt_header_ok(f.read(512)):
            die("primary GPT header not valid before damaging it")
        f.seek(512)
        f.write(random.Random("gpt-damage").randbytes(512))
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        mbr = f.read(512)
        f.seek(512)
        lba1 = f.read(512)
        f.seek(last * 512)
        backup = f.read(512)
    if mbr[510:512] != b"\x55\xaa" or mbr[450] != 0xEE:
        die("protective MBR not intact")
    if gpt_header_ok(lba1) or lba1[:8] == b"EFI PART":
        die("primary header still looks valid")
    if not gpt_header_ok(backup):
        die("backup GPT header at last LBA is not valid")
    my_lba = struct.unpack_from("<Q", backup, 24)[0]
    if my_lba != last:
        die(f"backup header MyLBA {my_lba} != {last}")
    print(f"layout.py: primary GPT header destroyed, backup at LBA {last} valid")


def cmd_lvm(layout_path, pv_name, vgs_json, lvs_json, specs):
    with open(layout_path) as f:
        layout = json.load(f)
    with open(vgs_json) as f:
        vgs = json.load(f)["report"][0]["vg"]
    with open(lvs_json) as f:
        segs = json.load(f)["report"][0]["seg"]
    if len(vgs) != 1:
        die(f"expected one VG, lvs saw {len(vgs)}")
    vg = vgs[0]
    lvs = []
    for sp in specs:
        name, fs, label, sha = sp.split(":", 3)
        vg_name, lv_name = name.split("-", 1)
        mine = [s for s in segs if s["lv_name"] == lv_name]
        if not mine or vg_name != vg["vg_name"]:
            die(f"{name}: not in the lvs report")
        lvs.append({"name": name, "vg": vg_name, "lv": lv_name, "fs": fs or None,
                    "label": label or None, "sha256": sha,
                    "size": int(mine[0]["lv_size"].rstrip("B")),
                    "segments": [{"start_pe": int(s["seg_start_pe"]), "size_pe": int(s["seg_size_pe"]),
                                  "pv": pv_name, "pe_ranges": s["seg_pe_ranges"].split(":", 1)[1],
                                  "type": s["segtype"]}
                                 for s in mine]})
    layout["lvm"] = {"vg": vg["vg_name"], "extent_size": int(vg["vg_extent_size"].rstrip("B")),
                     "extent_count": int(vg["vg_extent_count"]), "lvs": lvs}
    with open(layout_path, "w") as f:
        json.dump(layout, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    a = sys.argv[1:]
    if not a:
        die(__doc__)
    if a[0] == "parts":
        cmd_parts(a[1])
    elif a[0] == "check":
        cmd_check(a[1], a[2], a[3:])
    elif a[0] == "write":
        damaged = "--primary-damaged" in a
        a = [x for x in a if x != "--primary-damaged"]
        cmd_write(a[1], a[2], a[3], a[4:], damaged)
    elif a[0] == "lvm":
        cmd_lvm(a[1], a[2], a[3], a[4], a[5:])
    elif a[0] == "gpt-damage":
        cmd_gpt_damage(a[1])
    else:
        die(__doc__)


if __name__ == "__main__":
    main()
