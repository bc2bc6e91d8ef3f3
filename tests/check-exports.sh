#!/bin/sh
# Fails unless the shared library given as $1 exports exactly the symbols
# listed in the export list $2 (lib/ctasker.def): a symbol exported but not
# listed is an accidental export or an ABI addition to record; a symbol
# listed but not exported is an ABI break (see the soname policy in NEWS.md).
set -eu
lib=$1
def=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sort -u >"$tmp/exported"
# The .def format: comments after ';', an EXPORTS line, one symbol a line.
sed -e 's/;.*//' -e 's/[[:space:]]//g' "$def" | grep -v '^$' | grep -v '^EXPORTS$' |
  sort -u >"$tmp/listed"
[ -s "$tmp/exported" ] || { echo "no exported symbols in $lib"; exit 1; }
rc=0
extra=$(comm -23 "$tmp/exported" "$tmp/listed")
missing=$(comm -13 "$tmp/exported" "$tmp/listed")
if [ -n "$extra" ]; then
  echo "exported by $lib but not in $def:"
  printf '  %s\n' $extra
  rc=1
fi
if [ -n "$missing" ]; then
  echo "in $def but not exported by $lib:"
  printf '  %s\n' $missing
  rc=1
fi
bad=$(grep -v '^ct_[a-z]' "$tmp/listed" || true)
if [ -n "$bad" ]; then
  echo "symbols outside the public ct_ namespace in $def:"
  printf '  %s\n' $bad
  rc=1
fi
[ "$rc" -ne 0 ] || echo "$(wc -l <"$tmp/exported") symbols, as listed in $def"
exit "$rc"
