#!/bin/sh
# Fails when a file of the library includes a header of a higher layer.
# $1 is lib/; each of its folders is a layer, in the order DESIGN gives
# below (a layer may use only itself and those before it). An include of
# "LAYER/x.h" names its layer; a public header "ctasker/x.h" belongs to the
# layer that implements it.
set -eu
lib=$1
layers="base core exec process supervisor workers broker"
# Files that still include a higher layer, each a known debt that only
# shrinks (none now).
pending=""

rank() {
  i=0
  for l in $layers; do
    [ "$l" = "$1" ] && { echo "$i"; return; }
    i=$((i + 1))
  done
  echo -1
}

public_layer() {
  case $1 in
  common.h | version.h | result.h) echo base ;;
  task.h) echo core ;;
  process.h) echo process ;;
  supervisor.h | loop.h | locker.h) echo supervisor ;;
  worker.h) echo workers ;;
  broker-admin.h | plugin.h) echo broker ;;
  *) echo "${1%.h}" ;;
  esac
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
checked=0
for dir in "$lib"/*/; do
  layer=$(basename "$dir")
  own=$(rank "$layer")
  if [ "$own" -lt 0 ]; then
    echo "lib/$layer/ is not a layer: add it to the list in $0" >>"$tmp/bad"
    continue
  fi
  for f in "$dir"*.c "$dir"*.h; do
    [ -f "$f" ] || continue
    name=$layer/$(basename "$f")
    checked=$((checked + 1))
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([a-z]*\)\/\([^"]*\)".*/\1 \2/p' "$f" >"$tmp/includes"
    while read -r folder header; do
      target=$folder
      [ "$folder" = ctasker ] && target=$(public_layer "$header")
      r=$(rank "$target")
      [ "$r" -ge 0 ] && [ "$r" -le "$own" ] && continue
      case " $pending " in
      *" $name "*) echo "$name" >>"$tmp/pending_seen" ;;
      *) echo "$name includes $folder/$header, of layer $target, above $layer" >>"$tmp/bad" ;;
      esac
    done <"$tmp/includes"
  done
done
# A debt paid off leaves the list too, so that the file cannot slip back.
for name in $pending; do
  grep -qx "$name" "$tmp/pending_seen" 2>/dev/null ||
    echo "$name no longer includes a higher layer: take it off the pending list in $0" >>"$tmp/bad"
done
[ "$checked" -gt 0 ] || echo "no files found under $lib" >>"$tmp/bad"
if [ -s "$tmp/bad" ]; then
  cat "$tmp/bad"
  exit 1
fi
echo "$checked files, each including only its own layer and those below"
