#!/usr/bin/env python3
"""Build the demo restore point's content in a mounted volume.

usage: demo_tree.py ROOT --fs ntfs|ext
  ntfs: a Windows profile (Users/alice/Documents/*.docx ..., a .ps1 script)
  ext:  a Linux system (home/alice/mail/inbox.mbox, usr/local/bin, etc)
"""
import argparse
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiutil import det_text, fix_times, mbox, setfattr, try_chmod, write_file  # noqa: E402


def office_zip(path, kind, text):
    """A small, deterministic OOXML-like zip (fixed member dates)."""
    main = {"docx": "word/document.xml", "xlsx": "xl/workbook.xml",
            "pptx": "ppt/presentation.xml"}[kind]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [
            ("[Content_Types].xml",
             '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
             'openxmlformats.org/package/2006/content-types"/>'),
            ("_rels/.rels", '<?xml version="1.0" encoding="UTF-8"?><Relationships/>'),
            (main, '<?xml version="1.0" encoding="UTF-8"?><doc><p>' + text + "</p></doc>"),
        ]:
            zi = zipfile.ZipInfo(name, date_time=(2020, 9, 13, 12, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)


def ntfs_tree(root):
    J = lambda *p: os.path.join(root, *p)  # noqa: E731
    docs = J("Users", "alice", "Documents")
    os.makedirs(docs)
    os.makedirs(J("Users", "alice", "Desktop"))
    os.makedirs(J("Users", "alice", "Scripts"))
    os.makedirs(J("Users", "Public"))
    office_zip(os.path.join(docs, "Quarterly Report Q3.docx"), "docx",
               det_text("demo/report", 3000).decode())
    office_zip(os.path.join(docs, "Budget 2020.xlsx"), "xlsx", det_text("demo/budget", 2000).decode())
    office_zip(os.path.join(docs, "Kick-off.pptx"), "pptx", det_text("demo/kickoff", 1500).decode())
    write_file(os.path.join(docs, "Notes.txt"), det_text("demo/notes", 900).replace(b"\n", b"\r\n"))
    write_file(os.path.join(docs, "Résumé – Alice.txt"), "Alice Example\r\nRésumé\r\n".encode())
    write_file(J("Users", "alice", "Desktop", "todo.txt"), b"- restore the mailbox\r\n- call Bob\r\n")
    setfattr(J("Users", "alice", "Desktop", "todo.txt"), "user.Zone.Identifier",
             b"[ZoneTransfer]\r\nZoneId=3\r\n")
    ps = ("# Backup-Home.ps1: copy Alice's documents to the backup share\r\n"
          "param([string]$Target = '\\\\nas\\backup\\alice')\r\n"
          "$src = Join-Path $env:USERPROFILE 'Documents'\r\n"
          "Get-ChildItem -Path $src -Recurse -File |\r\n"
          "    ForEach-Object { Copy-Item $_.FullName -Destination $Target -Force }\r\n"
          "Write-Host \"Backed up $((Get-ChildItem $src -Recurse -File).Count) files\"\r\n")
    write_file(J("Users", "alice", "Scripts", "Backup-Home.ps1"), b"\xef\xbb\xbf" + ps.encode())
    write_file(J("Users", "Public", "desktop.ini"),
               b"\xff\xfe" + "[.ShellClassInfo]\r\nLocalizedResourceName=Public\r\n".encode("utf-16-le"))


def ext_tree(root):
    J = lambda *p: os.path.join(root, *p)  # noqa: E731
    for d in ("home/alice/mail", "home/alice/Documents", "usr/local/bin", "etc/cron.daily"):
        os.makedirs(J(*d.split("/")))
    write_file(J("home", "alice", "mail", "inbox.mbox"), mbox("demo/inbox", 40 * 1024))
    write_file(J("home", "alice", ".bashrc"),
               b"# ~/.bashrc\nexport PATH=$HOME/bin:$PATH\nalias ll='ls -l'\n")
    write_file(J("home", "alice", "Documents", "notes.md"), b"# Notes\n\n" + det_text("demo/md", 700))
    os.chown(J("home", "alice"), 1000, 1000)
    for p in ("home/alice/mail", "home/alice/mail/inbox.mbox", "home/alice/.bashrc",
              "home/alice/Documents", "home/alice/Documents/notes.md"):
        os.chown(J(*p.split("/")), 1000, 1000)
    os.chmod(J("home", "alice", "mail", "inbox.mbox"), 0o600)
    os.chmod(J("home", "alice", "mail"), 0o700)
    scripts = {
        "usr/local/bin/backup.sh": "#!/bin/sh\n# nightly backup of /home\nset -eu\n"
                                   "tar -C / -czf /var/backups/home-$(date +%F).tar.gz home\n",
        "usr/local/bin/sync-photos.sh": "#!/bin/bash\nset -euo pipefail\n"
                                        "rsync -a --delete \"$HOME/Pictures/\" nas:/photos/\n",
        "etc/cron.daily/backup": "#!/bin/sh\nexec /usr/local/bin/backup.sh\n",
    }
    for rel, text in scripts.items():
        write_file(J(*rel.split("/")), text.encode())
        try_chmod(J(*rel.split("/")), 0o755)
    write_file(J("etc", "hostname"), b"demo-vm\n")
    write_file(J("etc", "fstab"), b"LABEL=linux / ext4 defaults 0 1\n")
    write_file(J("etc", "backup.conf"), b"[backup]\ntarget = nas:/backup\nkeep = 7\n")
    os.chmod(J("etc", "backup.conf"), 0o640)
    os.symlink("/usr/local/bin/backup.sh", J("home", "alice", "backup"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--fs", choices=["ext", "ntfs"], required=True)
    a = ap.parse_args()
    (ntfs_tree if a.fs == "ntfs" else ext_tree)(a.root)
    fix_times(a.root)
    os.sync()


if __name__ == "__main__":
    main()
