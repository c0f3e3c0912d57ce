#!/bin/sh
# make run: boot examples/hello.ini and say how long it took.
set -e
EMBER=${1:-build/ember}
dir=$(dirname "$0")
echo "== ember run $dir/hello.ini" >&2
start=$(date +%s%N)
"$EMBER" run "$dir/hello.ini" --stats
end=$(date +%s%N)
echo "== exit code 0; wall time from exec to exit $(( (end - start) / 1000 )) us (includes the shell's fork)" >&2
