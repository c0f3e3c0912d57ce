#!/bin/sh
# Fetch Debian's cloud kernel (without installing it) and build what the
# Linux boot tests need:
#   OUTDIR/bzImage            boot/vmlinuz-* from linux-image-<ver>-cloud-amd64
#   OUTDIR/vmlinux            the ELF inside it (extract_vmlinux.py)
#   OUTDIR/initramfs.cpio.gz  busybox-static + an /init that greets and reboots
#   OUTDIR/kernel-release     e.g. 6.1.0-56-cloud-amd64
# Debian 12, as root, with apt.  Idempotent: packages are cached in
# tests/linux/cache/ (EMBER_KERNEL_CACHE overrides), and an OUTDIR that is
# complete for the current package is left alone.
# Exit status: 0 done, 1 usage or build failure, 2 apt cannot get the kernel.
set -eu

usage() {
	echo "usage: $0 OUTDIR" >&2
	exit 1
}
die() {
	echo "fetch-kernel: $*" >&2
	exit 1
}
[ $# -eq 1 ] || usage
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${EMBER_KERNEL_CACHE:-$HERE/cache}
mkdir -p "$1" "$CACHE/debs"
OUT=$(cd "$1" && pwd)

# The versioned package the meta-package points at, e.g.
# linux-image-6.1.0-56-cloud-amd64.  apt-cache reads local lists only; if
# they lack it (fresh container), refresh them once.
kernel_pkg() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1
}
PKG=$(kernel_pkg || true)
if [ -z "$PKG" ]; then
	echo "fetch-kernel: apt lists lack linux-image-cloud-amd64; running apt-get update" >&2
	apt-get update -q >/dev/null 2>&1 || true
	PKG=$(kernel_pkg || true)
fi
if [ -z "$PKG" ]; then
	# Offline with a cache: use the newest kernel already downloaded.
	DEB=$(ls -1 "$CACHE"/debs/linux-image-*-cloud-amd64_*.deb 2>/dev/null | sort -V | tail -n 1)
	[ -n "$DEB" ] || {
		echo "fetch-kernel: apt knows no linux-image-cloud-amd64 and the cache is empty:" \
			"cannot reach the Debian archive (check sources.list / network)" >&2
		exit 2
	}
	PKG=$(basename "$DEB" | sed 's/_.*//')
fi
RELEASE=${PKG#linux-image-}

if [ -f "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$PKG" ] &&
	[ -s "$OUT/bzImage" ] && [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initramfs.cpio.gz" ]; then
	echo "fetch-kernel: $OUT is up to date ($RELEASE)"
	exit 0
fi
rm -f "$OUT/.complete"

# apt-get download writes to the current directory; _apt cannot write
# root's cache dirs, so the download runs unsandboxed (a harmless warning).
fetch_deb() { # package -> path of its .deb in the cache
	deb=$(ls -1 "$CACHE"/debs/"$1"_*.deb 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$deb" ]; then
		(cd "$CACHE/debs" && apt-get download -q "$1" >/dev/null 2>"$CACHE/debs/apt.log") || {
			echo "fetch-kernel: apt-get download $1 failed: cannot reach the Debian archive?" >&2
			sed 's/^/  /' "$CACHE/debs/apt.log" >&2
			exit 2
		}
		deb=$(ls -1 "$CACHE"/debs/"$1"_*.deb | sort -V | tail -n 1)
	fi
	echo "$deb"
}

DEB=$(fetch_deb "$PKG")
ROOT="$CACHE/$PKG"
if [ ! -f "$ROOT/.extracted" ]; then
	rm -rf "$ROOT"
	dpkg -x "$DEB" "$ROOT"
	touch "$ROOT/.extracted"
fi
VMLINUZ="$ROOT/boot/vmlinuz-$RELEASE"
[ -f "$VMLINUZ" ] || die "$DEB holds no boot/vmlinuz-$RELEASE"

# A static busybox: the installed busybox-static, else its package.
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed"; then
	BUSYBOX=/bin/busybox
else
	BBDEB=$(fetch_deb busybox-static)
	BBROOT="$CACHE/busybox-static"
	[ -f "$BBROOT/bin/busybox" ] || dpkg -x "$BBDEB" "$BBROOT"
	BUSYBOX="$BBROOT/bin/busybox"
fi

cp "$VMLINUZ" "$OUT/bzImage.tmp" && mv "$OUT/bzImage.tmp" "$OUT/bzImage"
python3 "$HERE/extract_vmlinux.py" "$OUT/bzImage" "$OUT/vmlinux" || die "cannot extract vmlinux"
python3 "$HERE/mkinitramfs.py" "$BUSYBOX" "$OUT/initramfs.cpio.gz" || die "cannot build initramfs"
echo "$RELEASE" >"$OUT/kernel-release"
echo "$PKG" >"$OUT/.complete"
echo "fetch-kernel: $OUT ready ($RELEASE)"
