#!/bin/sh
# make run: boot examples/hello.ini; ember's --stats line says how long the
# boot took (from ember's main; `make bench` adds exec and compares QEMU).
set -e
EMBER=${1:-build/ember}
dir=$(dirname "$0")
echo "== ember run $dir/hello.ini --stats" >&2
"$EMBER" run "$dir/hello.ini" --stats
echo "== the guest's output is above; ember's timings are on the 'stats' line" >&2
