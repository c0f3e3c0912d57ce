#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_virtqueue.c into corpus/virtqueue/ (see
the input layout at the top of that file).  Run from tests/fuzz/."""
import os
import struct

NEXT, WRITE = 1, 2


def seed(name, num_sel, cursor, desc, avail, used, ops, off, descs, heads, r1=False):
    ram = bytearray(0x400)
    base = 0  # offsets inside the chosen region
    for i, (addr, ln, fl, nx) in descs.items():
        struct.pack_into("<QIHH", ram, desc + 16 * i, addr, ln, fl, nx)
    num = 1 << (num_sel % 9)
    for k, h in enumerate(heads):
        struct.pack_into("<H", ram, avail + 4 + 2 * ((cursor + k) % num), h)
    struct.pack_into("<H", ram, avail + 2, (cursor + len(heads)) & 0xFFFF)
    sel = 0x8000 if r1 else 0
    hdr = struct.pack("<HHHHHBB", num_sel, cursor, sel | desc, sel | avail, sel | used, ops, off)
    img = bytes(ram)
    if r1:
        img = bytes(0x8000) + img  # region 0 empty, the rings in region 1
    with open(os.path.join("corpus/virtqueue", name), "wb") as f:
        f.write(hdr + img)


R1 = 0x100000000
# out, out, in: the unit test's good chain
seed("good3", 3, 0, 0x000, 0x080, 0x100, 3, 5,
     {5: (0x200, 100, NEXT, 2), 2: (0x280, 50, NEXT, 7), 7: (0x300, 64, WRITE, 0)}, [5])
# two chains across the u16 index wrap
seed("wrap", 3, 0xFFFF, 0x000, 0x080, 0x100, 2, 0,
     {0: (0x200, 8, 0, 0), 1: (0x300, 16, WRITE, 0)}, [0, 1])
# rings and buffers in the region above 4 GiB
seed("high", 3, 0, 0x000, 0x080, 0x100, 3, 1,
     {0: (R1 + 0x200, 32, NEXT, 1), 1: (R1 + 0x300, 32, WRITE, 0)}, [0], r1=True)
# a loop, and an indirect descriptor
seed("loop", 3, 0, 0x000, 0x080, 0x100, 0, 0,
     {0: (0x200, 8, NEXT, 1), 1: (0x200, 8, NEXT, 0)}, [0])
seed("indirect", 3, 0, 0x000, 0x080, 0x100, 0, 0, {0: (0x200, 16, 4, 0)}, [0])
# A descriptor table dense with valid readable descriptors past num (4), so
# that one wrong index check is one mutated byte away from a chain that
# the walker must refuse.
seed("dense", 2, 0, 0x000, 0x200, 0x300, 3, 0,
     {i: (0x800 + 8 * i, 8, 0, 0) for i in range(32)} | {0: (0x800, 8, NEXT, 1)}, [0])
