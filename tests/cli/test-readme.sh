#!/usr/bin/env bash
# The README's Redis section, as it stands there: a redis-server of the
# test's own on a Unix socket, `ctasker worker` serving the README's plugin
# (its first C block, built as a shared object), and the README's C
# producer (its second C block, built as a program) calling add through it.
# Usage: test-readme.sh CTASKER README-PLUGIN.so README-PRODUCER
set -uo pipefail
ctasker=$1
plugin=$2
producer=$3
dir=$(mktemp -d /tmp/ct-readme-XXXXXX)
sock=$dir/redis.sock
export CTASKER_URL=unix://$sock
redis_pid=
worker_pid=

cleanup() {
  [ -n "$worker_pid" ] && kill -KILL "$worker_pid" 2>/dev/null
  [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# wait_for WHAT CMD...: poll CMD until it succeeds, at most 30 s.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 300); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAIL - $what: not within 30 s"
  exit 1
}

redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir" --save "" \
  --appendonly no --logfile redis.log &
redis_pid=$!
wait_for "redis-server up" redis-cli -s "$sock" ping

"$ctasker" worker --handlers "$plugin" --threads 2 2>"$dir/worker.log" &
worker_pid=$!
wait_for "the worker with the README's plugin starts" grep -q 'ready: pid' "$dir/worker.log"

out=$("$producer" 2>"$dir/err")
rc=$?
if [ "$rc" -ne 0 ] || [ "$out" != 5 ]; then
  echo "FAIL - the README's producer: exit $rc, printed '$out'"
  sed 's/^/  err: /' "$dir/err"
  sed 's/^/  worker: /' "$dir/worker.log"
  exit 1
fi
echo "ok - the README's C producer called the README's plugin: 5"
kill -TERM "$worker_pid"
wait "$worker_pid"
rc=$?
worker_pid=
[ "$rc" -eq 0 ] || { echo "FAIL - the worker exited $rc"; exit 1; }
echo "ok - the worker drained and exited 0"
