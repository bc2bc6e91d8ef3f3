#!/bin/sh
# Fails if the shared library given as $1 exports a symbol outside the
# public ct_ namespace (or exports nothing at all).
set -eu
syms=$(nm -D --defined-only "$1" | awk 'NF >= 3 { print $3 }')
[ -n "$syms" ] || { echo "no exported symbols in $1"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v '^ct_[a-z]' || true)
if [ -n "$bad" ]; then
  echo "symbols outside ct_ exported by $1:"
  printf '%s\n' "$bad"
  exit 1
fi
echo "$(printf '%s\n' "$syms" | wc -l) symbols, all ct_"
