#!/usr/bin/env python3
"""Extract the vmlinux ELF from an x86 bzImage.

The protected-mode part of a bzImage starts at (setup_sects + 1) * 512
(setup_sects 0 means 4); its compressed payload lies at payload_offset
(0x248) for payload_length (0x24c) bytes from there (Linux boot protocol
2.08+).  The kernel build appends the uncompressed size as 4 little-endian
bytes to every compressed format.  Usage: extract_vmlinux.py BZIMAGE OUT
"""
import bz2
import gzip
import lzma
import struct
import subprocess
import sys

MAGICS = [  # (magic, name)
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b", "gzip"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x89LZO", "lzo"),
]


def payload(img):
    if len(img) < 0x268 or img[0x202:0x206] != b"HdrS":
        sys.exit("extract_vmlinux: not a bzImage (no \"HdrS\" at 0x202)")
    version, = struct.unpack_from("<H", img, 0x206)
    if version < 0x208:
        sys.exit("extract_vmlinux: boot protocol 0x%04x has no payload_offset" % version)
    sects = img[0x1f1] or 4
    off, length = struct.unpack_from("<II", img, 0x248)
    start = (sects + 1) * 512 + off
    if start + length > len(img) or length < 8:
        sys.exit("extract_vmlinux: payload 0x%x+0x%x lies outside the %d-byte file"
                 % (start, length, len(img)))
    return img[start:start + length]


def tool(argv, data):
    # zstd/lz4 read the stream without the appended size; their exit code
    # is what counts.
    r = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit("extract_vmlinux: %s failed: %s" % (argv[0], r.stderr.decode(errors="replace")))
    return r.stdout


def decompress(data):
    size, = struct.unpack_from("<I", data, len(data) - 4)
    body = data[:-4]
    for magic, name in MAGICS:
        if body.startswith(magic):
            break
    else:
        sys.exit("extract_vmlinux: unknown compression, payload starts with %s" % body[:6].hex())
    if name == "xz":
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(body)
    elif name == "lzma":
        out = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(body)
    elif name == "gzip":
        out = gzip.decompress(body)
    elif name == "bzip2":
        out = bz2.BZ2Decompressor().decompress(body)
    elif name == "zstd":
        out = tool(["zstd", "-dc"], body)
    elif name == "lz4":
        out = tool(["lz4", "-dc"], body)
    else:
        out = tool(["lzop", "-dc"], body)
    if len(out) != size:
        sys.exit("extract_vmlinux: %s payload gave %d bytes, the image says %d"
                 % (name, len(out), size))
    return name, out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: extract_vmlinux.py BZIMAGE OUT")
    with open(sys.argv[1], "rb") as f:
        img = f.read()
    name, elf = decompress(payload(img))
    if not elf.startswith(b"\x7fELF"):
        sys.exit("extract_vmlinux: the %s payload is not an ELF file" % name)
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(elf)
    import os
    os.replace(tmp, sys.argv[2])
    print("extract_vmlinux: %s payload, %d bytes of ELF" % (name, len(elf)))


if __name__ == "__main__":
    main()
