#!/bin/sh
# Install the Debian packages ember's build and tests need, only if missing.
set -e
PKGS="build-essential libinih-dev libcmocka-dev libseccomp-dev libcap-ng-dev
libjansson-dev libhttp-parser-dev python3-pytest busybox-static cpio xz-utils
zstd lz4 qemu-system-x86 iproute2 clang libclang-rt-14-dev curl strace
libxxhash-dev zlib1g-dev libssl-dev openssl gdb
etcd-server etcd-client libcurl4-openssl-dev libsystemd-dev
prometheus chromium chromium-driver python3-selenium"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends $missing >/dev/null
