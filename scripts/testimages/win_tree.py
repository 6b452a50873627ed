#!/usr/bin/env python3
"""Build the content of the win-gpt test image (a Windows-like disk).

usage: win_tree.py windows ROOT  [--seed S]   the C: volume, on ntfs-3g mounted
                                              with `compression,streams_interface=xattr`
       win_tree.py recovery ROOT [--seed S]   the recovery tools volume (ntfs-3g)
       win_tree.py esp DIR [--seed S]         a host folder that mcopy copies to the ESP

The C: volume holds what a Windows guest's disk holds and what a reader
gets wrong most easily: an $MFT fragmented into hundreds of runs (so its
runs spill into an attribute list), LZNT1-compressed folders (compressible,
incompressible and all-zero compression units in one file), sparse files,
alternate data streams (Zone.Identifier), reparse-point symbolic links
(absolute, relative, to a directory, dangling) and junctions made the way
Windows makes them, hard links (WinSxS), a directory of thousands of
entries (a multi-level index B+ tree), Unicode names, $Recycle.Bin and
System Volume Information.

Reparse points are written with ntfs-3g's `system.ntfs_reparse_data` xattr
(the buffer Windows' CreateSymbolicLink / mklink /J write); compression is
switched on per folder with `system.ntfs_attrib_be` (FILE_ATTRIBUTE_COMPRESSED),
and files created in such a folder inherit it.  Everything is
deterministic; times are fixed at the end (tiutil.fix_times).
"""
import argparse
import errno
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiutil import det_bytes, det_text, fix_times, mbox, setfattr, write_file  # noqa: E402

TAG_MOUNT_POINT = 0xA0000003
TAG_SYMLINK = 0xA000000C
SYMLINK_RELATIVE = 1
ATTR_COMPRESSED = 0x800


def reparse_buffer(tag, substitute, printed, flags=None):
    """A REPARSE_DATA_BUFFER: header, name offsets/lengths, [flags], names (UTF-16LE)."""
    sub = substitute.encode("utf-16-le")
    prn = printed.encode("utf-16-le")
    body = struct.pack("<HHHH", 0, len(sub), len(sub), len(prn))
    if flags is not None:
        body += struct.pack("<I", flags)
    body += sub + prn
    return struct.pack("<IHH", tag, len(body), 0) + body


def symlink(path, target, relative, is_dir=False):
    """mklink [/D]: an empty file (or directory) carrying a symlink reparse point."""
    if is_dir:
        os.mkdir(path)
    else:
        write_file(path, b"")
    sub = target if relative else "\\??\\" + target
    setfattr(path, "system.ntfs_reparse_data",
             reparse_buffer(TAG_SYMLINK, sub, target, SYMLINK_RELATIVE if relative else 0))


def junction(path, target):
    """mklink /J: an empty directory carrying a mount-point reparse point."""
    os.mkdir(path)
    setfattr(path, "system.ntfs_reparse_data",
             reparse_buffer(TAG_MOUNT_POINT, "\\??\\" + target, target))


def compressed_dir(path):
    """A folder whose new files ntfs-3g compresses (needs the `compression` option)."""
    os.makedirs(path, exist_ok=True)
    setfattr(path, "system.ntfs_attrib_be", struct.pack(">I", ATTR_COMPRESSED | 0x10))


def sparse_file(path, size, pieces):
    """A file of `size` bytes with data only at the (offset, bytes) `pieces`."""
    with open(path, "wb") as f:
        for off, data in pieces:
            f.seek(off)
            f.write(data)
        f.truncate(size)


def crlf(text):
    return text.replace(b"\n", b"\r\n")


def zone(url):
    return crlf(f"[ZoneTransfer]\nZoneId=3\nReferrerUrl={url}\nHostUrl={url}setup\n".encode())


class Holes:
    """Free space in 4 KiB pieces, so that what is allocated next (the $MFT
    growing while many files are made) lands in hundreds of runs: fill the
    volume (one big filler, then 4 KiB files), delete every other small one."""

    def __init__(self, root, small_bytes):
        self.dir = os.path.join(root, "fill.tmp")
        os.mkdir(self.dir)
        st = os.statvfs(root)
        big = st.f_bavail * st.f_bsize - small_bytes
        with open(os.path.join(self.dir, "big"), "wb") as f:
            chunk = bytes(1 << 20)
            while big > 0:
                f.write(chunk[:min(big, len(chunk))])
                big -= len(chunk)
        self.small = []
        while True:
            p = os.path.join(self.dir, f"{len(self.small):06d}")
            try:
                write_file(p, bytes(4096))
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if os.path.exists(p):
                    os.unlink(p)
                break
            self.small.append(p)
        os.sync()
        for p in self.small[0::2]:
            os.unlink(p)
        os.sync()

    def release(self):
        for p in self.small[1::2]:
            os.unlink(p)
        os.unlink(os.path.join(self.dir, "big"))
        os.rmdir(self.dir)
        os.sync()


def windows(root, seed):
    J = lambda *p: os.path.join(root, *p)  # noqa: E731
    md = lambda *p: os.makedirs(J(*p), exist_ok=True)  # noqa: E731

    # WinSxS manifests first, into the holes: the $MFT grows by one 4 KiB
    # piece at a time while these 2600 records are made.
    holes = Holes(root, 14 << 20)
    md("Windows", "WinSxS", "Manifests")
    for i in range(2600):
        name = (f"amd64_microsoft-windows-component{i % 97:02d}_31bf3856ad364e35_"
                f"10.0.19041.{i}_none_{(i * 2654435761) & 0xffffffff:08x}.manifest")
        write_file(J("Windows", "WinSxS", "Manifests", name),
                   det_text(f"{seed}/sxs/{i}", 200 + (i * 37) % 900) if i % 5 == 0 else b"")
    holes.release()

    # System files; notepad.exe hard-linked from WinSxS as Windows does.
    md("Windows", "System32", "drivers", "etc")
    write_file(J("Windows", "System32", "drivers", "etc", "hosts"),
               crlf(b"# Copyright (c) 1993-2009 Microsoft Corp.\n#\n"
                    b"# localhost name resolution is handled within DNS itself.\n"
                    b"#\t127.0.0.1       localhost\n10.0.0.5    fileserver.corp.example\n"))
    md("Windows", "System32", "config")
    write_file(J("Windows", "System32", "config", "SOFTWARE"), det_bytes(f"{seed}/software", 1_300_000))
    write_file(J("Windows", "System32", "config", "SYSTEM"), det_bytes(f"{seed}/system", 420_000))
    sxs = J("Windows", "WinSxS", "amd64_microsoft-windows-notepad_31bf3856ad364e35_10.0.19041.1_none_a1b2c3d4")
    os.makedirs(sxs)
    write_file(os.path.join(sxs, "notepad.exe"), det_bytes(f"{seed}/notepad", 201_216))
    os.link(os.path.join(sxs, "notepad.exe"), J("Windows", "System32", "notepad.exe"))
    os.link(os.path.join(sxs, "notepad.exe"), J("Windows", "notepad.exe"))
    md("Windows", "Temp")

    # Compressed folders: text (LZNT1 units), random data (units stored
    # uncompressed), zeros (units left sparse), all mixed in one file.
    compressed_dir(J("Windows", "Logs"))
    compressed_dir(J("Windows", "Logs", "CBS"))
    write_file(J("Windows", "Logs", "CBS", "CBS.log"), crlf(det_text(f"{seed}/cbs", 700_000)))
    write_file(J("Windows", "Logs", "CBS", "CbsPersist_20200913.cab"), det_bytes(f"{seed}/cab", 150_001))
    unit = 16 * 4096
    mixed = (det_text(f"{seed}/mix/0", unit) + bytes(2 * unit) + det_bytes(f"{seed}/mix/1", unit)
             + det_text(f"{seed}/mix/2", unit // 2) + bytes(unit // 2) + det_bytes(f"{seed}/mix/3", 20_000))
    write_file(J("Windows", "Logs", "CBS", "mixed_units.bin"), mixed)
    write_file(J("Windows", "Logs", "CBS", "tiny.log"), b"resident in its record\r\n")
    write_file(J("Windows", "Logs", "CBS", "empty.log"), b"")
    compressed_dir(J("Windows", "Logs", "WindowsUpdate"))
    for i in range(12):
        write_file(J("Windows", "Logs", "WindowsUpdate", f"WindowsUpdate.{i:02d}.etl"),
                   det_text(f"{seed}/wu/{i}", 5000 + i * 9000))

    # Sparse files: a pagefile with data at both ends, a hibernation file
    # that is all hole.
    sparse_file(J("pagefile.sys"), 24 << 20,
                [(0, det_bytes(f"{seed}/pf/0", 8192)), (10 << 20, det_bytes(f"{seed}/pf/1", 70_000)),
                 ((24 << 20) - 4096, det_bytes(f"{seed}/pf/2", 4096))])
    sparse_file(J("hiberfil.sys"), 8 << 20, [])

    # Program Files with relative symlinks (file and directory).
    md("Program Files", "Contoso", "v1.2")
    write_file(J("Program Files", "Contoso", "v1.2", "contoso.exe"), det_bytes(f"{seed}/contoso", 90_000))
    write_file(J("Program Files", "Contoso", "v1.2", "readme.txt"), crlf(det_text(f"{seed}/contoso-rm", 3000)))
    symlink(J("Program Files", "Contoso", "current"), "v1.2", True, is_dir=True)
    symlink(J("Program Files", "Contoso", "contoso.exe"), "v1.2\\contoso.exe", True)
    md("Program Files (x86)", "Common Files")
    md("ProgramData", "Microsoft", "Windows", "Start Menu", "Programs")
    write_file(J("ProgramData", "Microsoft", "Windows", "Start Menu", "Programs", "desktop.ini"),
               b"\xff\xfe" + "[.ShellClassInfo]\r\nLocalizedResourceName=@shell32.dll,-21782\r\n"
               .encode("utf-16-le"))

    # Users: documents, downloads with Zone.Identifier streams, a mailbox,
    # compressed archive folder, Unicode names, the junctions Windows makes.
    md("Users", "Default")
    write_file(J("Users", "Default", "NTUSER.DAT"), det_bytes(f"{seed}/ntuser-default", 262_144))
    md("Users", "Public", "Documents")
    write_file(J("Users", "Public", "Documents", "shared.txt"), crlf(det_text(f"{seed}/shared", 2500)))
    a = ("Users", "alice")
    md(*a, "Desktop")
    md(*a, "Documents", "Archive 2019")
    md(*a, "Downloads")
    md(*a, "Favorites")
    md(*a, "AppData", "Roaming", "Microsoft", "Outlook")
    md(*a, "AppData", "Local", "Temp")
    write_file(J(*a, "NTUSER.DAT"), det_bytes(f"{seed}/ntuser-alice", 786_432))
    write_file(J(*a, "Desktop", "notes.txt"), crlf(det_text(f"{seed}/notes", 1800)))
    write_file(J(*a, "Documents", "Quarterly Report.docx"), det_bytes(f"{seed}/docx", 83_000))
    write_file(J(*a, "Documents", "Résumé – José Müller.docx"), det_bytes(f"{seed}/resume", 24_000))
    write_file(J(*a, "Documents", "会議メモ.txt"), "会議は金曜日です。\r\n".encode())
    compressed_dir(J(*a, "Documents", "Archive 2019"))
    for i in range(6):
        write_file(J(*a, "Documents", "Archive 2019", f"invoice_{i:03d}.csv"),
                   crlf(det_text(f"{seed}/inv/{i}", 30_000 + i * 17_000)))
    write_file(J(*a, "Documents", "Archive 2019", "scan.pdf"), det_bytes(f"{seed}/scan", 70_000))
    write_file(J(*a, "AppData", "Roaming", "Microsoft", "Outlook", "alice.mbox"),
               mbox(f"{seed}/mbox", 600 * 1024))
    write_file(J(*a, "AppData", "Local", "Temp", "~DF1A2B.tmp"), b"")
    for name, url, size in (("setup.exe", "https://downloads.example.com/", 150_000),
                            ("invoice.pdf.exe", "https://phish.example.net/", 48_000),
                            ("tool.zip", "https://tools.example.org/", 9_000)):
        p = J(*a, "Downloads", name)
        write_file(p, det_bytes(f"{seed}/dl/{name}", size))
        setfattr(p, "user.Zone.Identifier", zone(url))
    setfattr(J(*a, "Documents", "Quarterly Report.docx"), "user.SummaryInformation",
             det_bytes(f"{seed}/summary", 4096))
    junction(J(*a, "Application Data"), "C:\\Users\\alice\\AppData\\Roaming")
    junction(J(*a, "My Documents"), "C:\\Users\\alice\\Documents")
    junction(J("Users", "All Users"), "C:\\ProgramData")
    junction(J("Users", "Default User"), "C:\\Users\\Default")
    junction(J("Documents and Settings"), "C:\\Users")
    symlink(J(*a, "Desktop", "hosts"), "C:\\Windows\\System32\\drivers\\etc\\hosts", False)
    # (ntfs-3g shows a dangling relative reparse link as the text "unsupported
    # reparse tag": no dangling ones here, see the ntfs unit tests.)
    symlink(J(*a, "Desktop", "Archive"), "..\\Documents\\Archive 2019", True, is_dir=True)

    md("$Recycle.Bin", "S-1-5-21-1004336348-1177238915-682003330-1001")
    rb = J("$Recycle.Bin", "S-1-5-21-1004336348-1177238915-682003330-1001")
    write_file(os.path.join(rb, "$R4QX2TB.txt"), crlf(det_text(f"{seed}/deleted", 12_000)))
    write_file(os.path.join(rb, "$I4QX2TB.txt"),
               struct.pack("<QQQ", 2, 12_000, 132_443_000_000_000_000)
               + "C:\\Users\\alice\\Desktop\\todo.txt".encode("utf-16-le") + b"\0\0")
    md("System Volume Information")
    write_file(J("System Volume Information", "tracking.log"), det_bytes(f"{seed}/tracking", 20_480))

    fix_times(root)
    os.sync()
    check_windows(root)


def check_windows(root):
    """ntfs-3g must show that the compression and the holes happened."""
    J = lambda *p: os.path.join(root, *p)  # noqa: E731

    def attrib(p):
        return struct.unpack(">I", os.getxattr(p, "system.ntfs_attrib_be"))[0]

    for d in (J("Windows", "Logs", "CBS"), J("Users", "alice", "Documents", "Archive 2019")):
        for n in os.listdir(d):
            if not attrib(os.path.join(d, n)) & ATTR_COMPRESSED:
                sys.exit(f"win_tree: {d}/{n} is not compressed")
    for rel, most in ((("Windows", "Logs", "CBS", "CBS.log"), 0.5),
                      (("Windows", "Logs", "CBS", "mixed_units.bin"), 0.75),
                      (("pagefile.sys",), 0.01), (("hiberfil.sys",), 0.0)):
        st = os.stat(J(*rel))
        if st.st_blocks * 512 > most * st.st_size:
            sys.exit(f"win_tree: {'/'.join(rel)} takes {st.st_blocks * 512} of {st.st_size} bytes")
    if os.readlink(J("Users", "All Users")) != J("ProgramData"):
        sys.exit("win_tree: ntfs-3g does not show the junction")


def recovery(root, seed):
    d = os.path.join(root, "Recovery", "WindowsRE")
    os.makedirs(d)
    write_file(os.path.join(d, "Winre.wim"), det_bytes(f"{seed}/winre", 3_000_000))
    write_file(os.path.join(d, "boot.sdi"), det_bytes(f"{seed}/sdi", 3_170_304 // 4))
    write_file(os.path.join(d, "ReAgent.xml"),
               b"\xef\xbb\xbf" + crlf(b"<?xml version='1.0' encoding='utf-8'?>\n"
                                      b"<WindowsRE version=\"2.0\"><WinreBCD id=\"{5eed0007}\"/></WindowsRE>\n"))
    fix_times(root)
    os.sync()


def esp(root, seed):
    """An EFI system partition as Windows Setup leaves it (stand-in bytes)."""
    J = lambda *p: os.path.join(root, *p)  # noqa: E731
    md = lambda *p: os.makedirs(J(*p), exist_ok=True)  # noqa: E731
    mb = ("EFI", "Microsoft", "Boot")
    md("EFI", "Boot")
    md(*mb, "Fonts")
    md(*mb, "en-US")
    md(*mb, "Resources", "en-US")
    md("EFI", "Microsoft", "Recovery")
    write_file(J("EFI", "Boot", "bootx64.efi"), det_bytes(f"{seed}/bootx64", 1_540_000))
    write_file(J(*mb, "bootmgfw.efi"), det_bytes(f"{seed}/bootx64", 1_540_000))
    write_file(J(*mb, "bootmgr.efi"), det_bytes(f"{seed}/bootmgr", 1_260_000))
    write_file(J(*mb, "memtest.efi"), det_bytes(f"{seed}/memtest", 1_143_000))
    write_file(J(*mb, "BCD"), det_bytes(f"{seed}/bcd", 32_768))
    write_file(J(*mb, "BCD.LOG"), det_bytes(f"{seed}/bcdlog", 24_576))
    write_file(J(*mb, "BCD.LOG1"), b"")
    write_file(J(*mb, "BCD.LOG2"), b"")
    write_file(J(*mb, "boot.stl"), det_bytes(f"{seed}/stl", 12_000))
    write_file(J(*mb, "en-US", "bootmgfw.efi.mui"), det_bytes(f"{seed}/mui1", 80_000))
    write_file(J(*mb, "en-US", "memtest.efi.mui"), det_bytes(f"{seed}/mui2", 42_000))
    for f in ("segmono_boot.ttf", "segoe_slboot.ttf", "wgl4_boot.ttf", "malgun_boot.ttf"):
        write_file(J(*mb, "Fonts", f), det_bytes(f"{seed}/font/{f}", 40_000 + len(f) * 1000))
    write_file(J(*mb, "Resources", "bootres.dll"), det_bytes(f"{seed}/bootres", 90_000))
    write_file(J(*mb, "Resources", "en-US", "bootres.dll.mui"), det_bytes(f"{seed}/bootresmui", 11_000))
    write_file(J("EFI", "Microsoft", "Recovery", "BCD"), det_bytes(f"{seed}/rbcd", 28_672))
    md("EFI", "ubuntu")
    write_file(J("EFI", "ubuntu", "grubx64.efi"), det_bytes(f"{seed}/grub", 2_400_000))
    write_file(J("EFI", "ubuntu", "grub.cfg"),
               b"search.fs_uuid 5eed0007 root hd0,gpt3\nset prefix=($root)'/boot/grub'\n")
    write_file(J("EFI", "ubuntu", "A file name longer than eight dot three.conf"), b"long name\n")
    fix_times(root)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["windows", "recovery", "esp"])
    ap.add_argument("root")
    ap.add_argument("--seed", default="win-gpt")
    a = ap.parse_args()
    {"windows": windows, "recovery": recovery, "esp": esp}[a.what](a.root, a.seed)


if __name__ == "__main__":
    main()
