#!/bin/sh
# Boot a test guest under QEMU's microvm on the same KVM, for checking the
# guests independently of ember.  Usage:
#   tests/guest/qemu-run.sh GUEST.elf [CMDLINE] [extra qemu args, e.g. -m 256M -smp 2]
# Prints QEMU's exit code translated to ember's convention: isa-debug-exit
# exits with (S << 1) | 1 for a guest status S (so 1 is status 0, or a QEMU
# error with a message); 0 is a reset or triple fault (-no-reboot).
kernel=$1; shift
append=${1-}; [ $# -gt 0 ] && shift
qemu-system-x86_64 -M microvm,x-option-roms=off,isa-serial=on,rtc=off \
	-enable-kvm -cpu host,-arch-capabilities -nodefaults -nographic \
	-serial stdio -no-reboot -device i8042 \
	-device isa-debug-exit,iobase=0xf4,iosize=1 -m 64M "$@" \
	-kernel "$kernel" -append "$append"
rc=$?
if [ $((rc & 1)) -eq 1 ]; then
	echo "qemu-run: guest status $((rc >> 1))" >&2
	exit $((rc >> 1))
fi
echo "qemu-run: qemu exit $rc" >&2
exit $rc
