#!/bin/sh
# html2c.sh NAME FILE -> stdout: "static const char NAME[] = ..." (FILE as
# one C string literal, a line per line: \ " ? and tabs escaped, no
# trigraphs, UTF-8 kept), and NAME_CSP (upper case), a string literal:
# the CSP sources that allow
# exactly its inline <style> and <script> (their SHA-256, CSP level 2),
# each of which must open on a line "<style>"/"<script>" of its own and
# close on a line "</style>"/"</script>".  The Makefile embeds
# ha/emberd/dashboard.html in emberd with it (ha/emberd/web.c).
set -e
name=$1
file=$2
# The element's text is what lies between its tags: the newline after
# the opening tag, then the lines up to the closing one.
hash() {
	{ printf '\n'; sed -n "/^<$1>\$/,/^<\\/$1>\$/p" "$file" | sed '1d;$d'; } |
		openssl dgst -sha256 -binary | openssl base64 -A
}
for tag in style script; do
	if [ "$(grep -c "^<$tag>\$" "$file")" != 1 ] || [ "$(grep -c "^</$tag>\$" "$file")" != 1 ]; then
		echo "html2c.sh: $file: one <$tag> and one </$tag>, each on a line of its own" >&2
		exit 1
	fi
done
echo "/* generated from $file by ha/emberd/html2c.sh: do not edit */"
echo "static const char ${name}[] ="
sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' -e 's/\t/\\t/g' -e 's/^/"/' -e 's/$/\\n"/' "$file"
echo ";"
macro=$(echo "${name}_CSP" | tr a-z A-Z)
echo "#define $macro \"style-src 'sha256-$(hash style)'; script-src 'sha256-$(hash script)'\""
