#!/bin/sh
# stdin (a text file) -> stdout: "static const char NAME[] = ..." as one C
# string literal, a line per input line (the Makefile embeds
# ha/emberd/dashboard.html in emberd with it).  Escapes \ and ", and ?
# (no trigraphs), keeps UTF-8 bytes as they are.
set -e
name=$1
echo "/* generated from ha/emberd/dashboard.html by ha/emberd/html2c.sh: do not edit */"
echo "static const char ${name}[] ="
sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' -e 's/\t/\\t/g' -e 's/^/"/' -e 's/$/\\n"/'
echo ";"
