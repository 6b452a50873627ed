#!/usr/bin/env python3
"""Build a RHEL-like /boot in a mounted volume (kernel, initramfs, GRUB, BLS).

usage: boot_tree.py ROOT [--seed S]

Deterministic: content from seeded PRNGs, times from fix_times() at the end.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiutil import det_bytes, det_text, fix_times, setfattr, write_file  # noqa: E402

KVERS = ["5.14.0-362.8.1.el9_3.x86_64", "5.14.0-427.13.1.el9_4.x86_64"]
MACHINE_ID = "5eed000600004000800000000000beef"


def build(root, seed):
    J = lambda *p: os.path.join(root, *p)  # noqa: E731
    for d in ("grub2", "grub2/fonts", "grub2/i386-pc", "loader", "loader/entries",
              "efi", "efi/EFI", "efi/EFI/redhat"):
        os.makedirs(J(d), exist_ok=True)
    for i, kv in enumerate(KVERS):
        vmlinuz = det_bytes(f"{seed}/vmlinuz/{kv}", 1_500_000 + 4099 * i)
        write_file(J(f"vmlinuz-{kv}"), vmlinuz)
        os.chmod(J(f"vmlinuz-{kv}"), 0o755)
        write_file(J(f".vmlinuz-{kv}.hmac"),
                   f"{det_bytes(f'{seed}/hmac/{kv}', 32).hex()}  vmlinuz-{kv}\n".encode())
        write_file(J(f"initramfs-{kv}.img"), det_bytes(f"{seed}/initramfs/{kv}", 2_500_000 + 77 * i))
        os.chmod(J(f"initramfs-{kv}.img"), 0o600)
        write_file(J(f"System.map-{kv}"), det_text(f"{seed}/map/{kv}", 300_000))
        os.chmod(J(f"System.map-{kv}"), 0o600)
        write_file(J(f"config-{kv}"), det_text(f"{seed}/config/{kv}", 60_000))
        write_file(J(f"symvers-{kv}.gz"), b"\x1f\x8b\x08\x00" + det_bytes(f"{seed}/symvers/{kv}", 90_000))
        write_file(J("loader", "entries", f"{MACHINE_ID}-{kv}.conf"),
                   (f"title Red Hat Enterprise Linux ({kv}) 9.4 (Plow)\n"
                    f"version {kv}\nlinux /vmlinuz-{kv}\ninitrd /initramfs-{kv}.img $tuned_initrd\n"
                    "options root=/dev/mapper/rhel-root ro resume=/dev/mapper/rhel-swap "
                    "rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap\n"
                    "grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n").encode())
    # The rescue kernel is a hard link of the newest one on some installs.
    os.link(J(f"vmlinuz-{KVERS[1]}"), J(f"vmlinuz-0-rescue-{MACHINE_ID}"))
    write_file(J("grub2", "grub.cfg"), det_text(f"{seed}/grubcfg", 6000))
    os.chmod(J("grub2", "grub.cfg"), 0o600)
    # grubenv is exactly one 1 KiB block padded with '#'.
    env = f"# GRUB Environment Block\nsaved_entry={MACHINE_ID}-{KVERS[1]}\nboot_success=1\n"
    write_file(J("grub2", "grubenv"), (env + "#" * (1024 - len(env))).encode())
    write_file(J("grub2", "fonts", "unicode.pf2"), det_bytes(f"{seed}/font", 2_400_000 // 8))
    for m in ("normal.mod", "linux.mod", "lvm.mod", "xfs.mod", "part_gpt.mod"):
        write_file(J("grub2", "i386-pc", m), det_bytes(f"{seed}/mod/{m}", 5000 + len(m) * 300))
    write_file(J("grub2", "i386-pc", "core.img"), det_bytes(f"{seed}/core", 31_000))
    os.symlink("../boot", J("grub2", "boot_link"))
    os.symlink(f"vmlinuz-{KVERS[1]}", J("vmlinuz"))
    setfattr(J(f"vmlinuz-{KVERS[1]}"), "user.checksum", det_bytes(f"{seed}/ck", 32))
    setfattr(J("grub2"), "trusted.grub", b"boot dir")
    fix_times(root)
    os.sync()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--seed", default="restorefs")
    a = ap.parse_args()
    build(a.root, a.seed)


if __name__ == "__main__":
    main()
