#!/usr/bin/env python3
"""Echo Ethernet frames of one EtherType back into a tap, MACs swapped.

    tap_echo.py IFNAME [--ethertype 0x88b5] [--count N] [--timeout SECS]

For ember's net tests (tests/guest/hvt/net.c): the monitor holds the tap's
file descriptor, so a second opener cannot attach to the same tap (TUNSETIFF
on a busy single-queue tap is EBUSY).  Instead this binds an AF_PACKET
socket to the interface: a frame the guest writes to the tap enters the
host on IFNAME, the socket sees it, and a frame sent on the socket leaves
through IFNAME, which means the tap delivers it to the monitor, which
gives it to the guest.

Prints "ready" once bound (a test waits for that line), then one line per
frame echoed, and exits after --count frames (0 = no limit) or --timeout
seconds (default 30), or on SIGTERM/SIGINT, with the number echoed on the
last line.  Needs CAP_NET_RAW."""
import argparse
import select
import signal
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ifname")
    ap.add_argument("--ethertype", type=lambda s: int(s, 0), default=0x88B5)
    ap.add_argument("--count", type=int, default=0, help="stop after N frames (0: no limit)")
    ap.add_argument("--timeout", type=float, default=30.0, help="stop after SECS")
    a = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(a.ethertype))
    s.bind((a.ifname, a.ethertype))
    print("ready", flush=True)

    echoed = 0
    deadline = time.monotonic() + a.timeout
    while not stop and (a.count == 0 or echoed < a.count):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            r, _, _ = select.select([s], [], [], min(left, 0.5))
        except InterruptedError:
            continue
        if not r:
            continue
        frame, addr = s.recvfrom(65536)
        # addr = (ifname, proto, pkttype, hatype, hwaddr); skip what this
        # host sent out on IFNAME (our own echoes included).
        if addr[2] == socket.PACKET_OUTGOING or len(frame) < 14:
            continue
        reply = frame[6:12] + frame[0:6] + frame[12:]
        s.send(reply)
        echoed += 1
        print(f"echoed {len(frame)} bytes from {frame[6:12].hex(':')}", flush=True)
    print(f"tap_echo: {echoed} frames echoed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
