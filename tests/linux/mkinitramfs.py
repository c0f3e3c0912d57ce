#!/usr/bin/env python3
"""Write a gzip'd newc cpio initramfs: a static busybox, its applet links,
/dev/console, and an /init that greets and stops the VM.  Written here
rather than with cpio(1) so that no root is needed for the device node and
the archive is the same bytes every time.
Usage: mkinitramfs.py BUSYBOX OUT.cpio.gz"""
import gzip
import os
import stat
import subprocess
import sys

INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "ember-initramfs: hello"
echo "ember-initramfs: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu(s)"
# reboot -f resets through the i8042 (ember stops with status 0); without
# ACPI poweroff -f can only halt, kept as the fallback.
reboot -f
poweroff -f
"""


class Cpio:
    def __init__(self):
        self.buf = bytearray()
        self.ino = 1

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        nm = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in (
            self.ino, mode, 0, 0, 1 if not stat.S_ISDIR(mode) else 2, 0, len(data),
            0, 0, rdev[0], rdev[1], len(nm), 0))
        self.ino += 1
        self.buf += hdr.encode() + nm
        self.buf += b"\0" * (-len(self.buf) % 4)
        self.buf += data
        self.buf += b"\0" * (-len(self.buf) % 4)

    def trailer(self):
        self.add("TRAILER!!!", 0)
        self.buf += b"\0" * (-len(self.buf) % 512)
        return bytes(self.buf)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: mkinitramfs.py BUSYBOX OUT.cpio.gz")
    busybox, out = sys.argv[1], sys.argv[2]
    applets = subprocess.run([busybox, "--list-full"], check=True, stdout=subprocess.PIPE,
                             text=True).stdout.split()
    with open(busybox, "rb") as f:
        bb = f.read()
    c = Cpio()
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root"}
    for d in sorted(dirs):
        c.add(d, stat.S_IFDIR | 0o755)
    c.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    c.add("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3))
    c.add("bin/busybox", stat.S_IFREG | 0o755, bb)
    for a in sorted(set(applets)):
        if a == "bin/busybox" or os.path.dirname(a) not in dirs:
            continue
        c.add(a, stat.S_IFLNK | 0o777, b"/bin/busybox")
    c.add("init", stat.S_IFREG | 0o755, INIT.encode())
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(c.trailer(), mtime=0))
    os.replace(tmp, out)
    print("mkinitramfs: %d applets, %d bytes" % (len(applets), os.path.getsize(out)))


if __name__ == "__main__":
    main()
