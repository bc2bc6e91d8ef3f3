#!/usr/bin/env bash
# The `ctasker` command end to end: a redis-server of the test's own on a
# Unix socket in a temporary folder, a `ctasker worker` daemon loading the
# example plugin, and the operator commands against them; the metrics
# page scraped with curl and checked with promtool (which must be installed
# when CI=true; elsewhere that check is skipped without it); signals; bad
# input. Every wait is a poll with a generous bound: nothing here asserts a
# duration. Usage: test-cli.sh CTASKER HANDLERS.so EMPTY-PLUGIN.so
set -uo pipefail
ctasker=$1
handlers=$2
empty=$3
dir=$(mktemp -d /tmp/ct-cli-XXXXXX)
sock=$dir/redis.sock
export CTASKER_URL=unix://$sock
passed=0
failed=0
redis_pid=
worker_pid=
watch_pid=

cleanup() {
  [ -n "$worker_pid" ] && kill -KILL "$worker_pid" 2>/dev/null
  [ -n "$watch_pid" ] && kill -KILL "$watch_pid" 2>/dev/null
  [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; }

# expect CODE NAME CMD...: run CMD (output in $dir/out, $dir/err) and check
# its exit status.
expect() {
  local want=$1 name=$2
  shift 2
  "$@" >"$dir/out" 2>"$dir/err"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then
    ok "$name"
  else
    fail "$name: exit $rc, not $want"
    sed 's/^/  out: /' "$dir/out"
    sed 's/^/  err: /' "$dir/err"
  fi
}

# has FILE TEXT NAME: FILE holds TEXT.
has() {
  if grep -qF -- "$2" "$1"; then ok "$3"; else
    fail "$3: '$2' not in $1"
    sed 's/^/  | /' "$1"
  fi
}

# wait_for NAME CMD...: poll CMD until it succeeds, at most 30 s.
wait_for() {
  local name=$1
  shift
  for _ in $(seq 300); do
    if "$@" >/dev/null 2>&1; then ok "$name"; return 0; fi
    sleep 0.1
  done
  fail "$name: not within 30 s"
  return 1
}

# json FILE PYTHON-EXPRESSION: the expression over j (FILE's JSON) is true.
json() {
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$1"
}

status_is() { # ID STATUS
  "$ctasker" status --json "$1" >"$dir/st" 2>/dev/null && json "$dir/st" "j[0]['status'] == '$2'"
}

start_worker() { # LOG ARGS...
  local log=$1
  shift
  "$ctasker" worker --handlers "$handlers" --threads 2 "$@" 2>>"$log" &
  worker_pid=$!
  wait_for "worker started ($*)" grep -q 'ready: pid' "$log"
}

stop_worker() { # WANTED-EXIT NAME
  kill -TERM "$worker_pid"
  wait "$worker_pid"
  local rc=$?
  worker_pid=
  if [ "$rc" -eq "$1" ]; then ok "$2"; else fail "$2: exit $rc, not $1"; fi
}

# --- without Redis -----------------------------------------------------------

expect 2 "unknown subcommand" "$ctasker" frobnicate
has "$dir/err" "unknown command 'frobnicate'" "unknown subcommand says so"
expect 2 "no subcommand" "$ctasker"
for cmd in worker submit call status wait queues dead workers; do
  expect 0 "$cmd --help" "$ctasker" "$cmd" --help
  has "$dir/out" "Usage: ctasker $cmd" "$cmd --help shows its usage"
done
expect 2 "bad JSON" "$ctasker" submit add '{"a": 1,'
has "$dir/err" "not valid JSON" "bad JSON says so"
expect 2 "JSON that is not an object" "$ctasker" submit add '[1, 2]'
expect 2 "bad option" "$ctasker" submit add --priority urgent
expect 2 "an unknown option" "$ctasker" dead list --bogus
has "$dir/err" "ctasker dead: unrecognized option '--bogus'" \
  "getopt's message names the command and its subcommand"
expect 2 "call with an idempotency key" "$ctasker" call add --key k1
has "$dir/err" "a call is answered once" "call refuses --key and says why"
expect 3 "unreachable Redis (no socket)" "$ctasker" submit add --url "unix://$dir/none.sock"
has "$dir/err" "cannot connect to unix://$dir/none.sock" "unreachable Redis names the URL"
expect 3 "unreachable Redis (refused)" "$ctasker" queues --url redis://127.0.0.1:1
has "$dir/err" "cannot connect to redis://127.0.0.1:1: connection refused" \
  "a refused connection says so"
expect 6 "a plugin that cannot be loaded" "$ctasker" worker --handlers "$dir/missing.so"
has "$dir/err" "plugin $dir/missing.so: cannot load it" "a missing plugin says so"
# --log-format json writes JSON lines also for a message that is not UTF-8
# (here a plugin's path): such a line came out as plain text
expect 6 "a plugin path that is not UTF-8, logged as JSON" "$ctasker" worker --log-format json \
  --handlers "$dir/no"$'\xff'".so"
python3 -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1], "rb")]' "$dir/err" &&
  ok "every line of a JSON log is JSON" || fail "a JSON log line is not JSON: $(cat "$dir/err")"
# --watch beyond a day overflowed the sleep: it redrew without a pause
expect 2 "queues --watch beyond a day" "$ctasker" queues --watch=1e300
has "$dir/err" "0.1 to 86400" "queues --watch says its range"
# a queue name that is not UTF-8 broke queues (out of memory) and metrics
expect 2 "a queue name that is not UTF-8" "$ctasker" queues --queue $'q\xff' \
  --url "unix://$dir/none.sock"
has "$dir/err" "bad --url, --namespace or --queue" "a queue name that is not UTF-8 is refused"
# a bad --url stopped nothing: each id got an error of its own, and --json a []
expect 2 "status with a bad --url" "$ctasker" status --json --url bogus://x \
  00000000-0000-0000-0000-000000000000
[ ! -s "$dir/out" ] && ok "status with a bad --url prints no JSON" ||
  fail "status with a bad --url printed: $(cat "$dir/out")"
grep -q "not a task id" "$dir/err" && fail "status with a bad --url went on to the ids" ||
  ok "status with a bad --url stops there"

# --- Redis ---------------------------------------------------------------------

redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir" --save "" \
  --appendonly no --logfile redis.log &
redis_pid=$!
wait_for "redis-server up" redis-cli -s "$sock" ping
rcli() { redis-cli -s "$sock" "$@"; }

expect 6 "a plugin that registers nothing" "$ctasker" worker --handlers "$empty"
has "$dir/err" "registered no handler" "an empty plugin says so"
# a port beyond 65535 was cut to 16 bits: 70000 listened on 4464
expect 6 "--metrics with a port beyond 65535" "$ctasker" worker --handlers "$handlers" \
  --metrics 127.0.0.1:70000
has "$dir/err" "PORT from 0 to 65535" "--metrics says its port range"
expect 5 "submit before any worker registered the name" "$ctasker" submit add '{}'
has "$dir/err" "no worker has registered 'add'" "an unregistered name says so"

start_worker "$dir/w1.log" --metrics 127.0.0.1:0 --log-format json --grace 60 --processes 2
has "$dir/w1.log" '"level":"info"' "the log is JSON lines"

expect 0 "call add" "$ctasker" call add '{"a": 2, "b": 3}' --timeout 30
[ "$(cat "$dir/out")" = 5 ] && ok "call prints the result" || fail "call printed $(cat "$dir/out")"
expect 0 "call of the plugin's process handler" "$ctasker" call pid '{}' --timeout 30 --json
json "$dir/out" "j['result']['pid'] not in (0, $worker_pid)" && ok "a pool child ran the process handler" ||
  fail "pid: $(cat "$dir/out")"
expect 0 "call of the plugin's loop handler" "$ctasker" call after '{"seconds": 0.1, "value": 7}' --timeout 30
[ "$(cat "$dir/out")" = 7 ] && ok "a loop handler answers from its timer" ||
  fail "after printed $(cat "$dir/out")"
expect 1 "call of a failing task" "$ctasker" call fail '{"message": "no way"}' --timeout 30
has "$dir/out" '"class": "ValueError"' "a failed call prints the exception"
expect 0 "submit echo" "$ctasker" submit echo '{"x": 1}' --priority high
id=$(cat "$dir/out")
expect 0 "wait for it" "$ctasker" wait "$id" --timeout 30
has "$dir/out" "$id completed" "wait says it completed (plain lines when not a terminal)"
expect 0 "status --json" "$ctasker" status --json "$id"
json "$dir/out" "j[0]['status'] == 'completed' and j[0]['result'] == {'x': 1} and
  j[0]['attempts'] == 1" && ok "status shows the result" || fail "status: $(cat "$dir/out")"
expect 0 "status (table)" "$ctasker" status "$id"
has "$dir/out" "completed" "the status table shows the status"
expect 5 "status of an unknown task" "$ctasker" status 00000000-0000-4000-8000-000000000000
expect 5 "submit of a name no worker serves" "$ctasker" submit nosuchname '{}'

# The counters reach Redis once the worker is idle again.
wait_for "queues counts the tasks" sh -c "'$ctasker' queues --json >'$dir/q' &&
  python3 -c \"import json; j=json.load(open('$dir/q')); l={x['level']: x for x in j['levels']};
assert l['normal']['completed'] == 3 and l['normal']['failed'] == 1, j
assert l['high']['completed'] == 1 and j['workers'] == 1 and j['dead'] == 0, j\""
# Options of the broker's submissions: an idempotency key, a delay, retries.
expect 0 "submit with a key" "$ctasker" submit sleep '{"seconds": 0}' --key k1
first=$(cat "$dir/out")
expect 0 "submit with the same key" "$ctasker" submit sleep '{"seconds": 0}' --key k1
[ "$(cat "$dir/out")" = "$first" ] && ok "the same key gives the same id" ||
  fail "a second id for the same key: $(cat "$dir/out") after $first"
expect 0 "submit with a delay" "$ctasker" submit sleep '{"seconds": 0}' --delay 3600
later=$(cat "$dir/out")
status_is "$later" delayed && ok "a delayed task says so" || fail "delayed: $(cat "$dir/st")"
expect 2 "both --delay and --at" "$ctasker" submit sleep '{}' --delay 5 --at 2030-01-01T00:00:00Z
expect 0 "submit a task failing twice" "$ctasker" submit fail '{}' --attempts 2 --backoff 0.1
twice=$(cat "$dir/out")
expect 1 "wait says it failed" "$ctasker" wait "$twice" --timeout 60
wait_for "queues counts the retry and the delayed task" sh -c "'$ctasker' queues --json >'$dir/q' &&
  python3 -c \"import json; j=json.load(open('$dir/q')); l={x['level']: x for x in j['levels']};
assert l['normal']['retried'] == 1 and l['normal']['failed'] == 2 and j['delayed'] == 1, j\""
expect 0 "queues (table)" "$ctasker" queues
has "$dir/out" "READY" "the queues table has its header"

expect 0 "workers --json" "$ctasker" workers --json
json "$dir/out" "len(j) == 1 and 'add' in j[0]['names'] and j[0]['concurrency'] == 2" &&
  ok "workers lists the worker" || fail "workers: $(cat "$dir/out")"

# Dead letters: an entry without kwargs is malformed: the worker buries it.
rcli XADD 'ctasker:{default}:stream:normal' '*' id 11111111-1111-4111-8111-111111111111 \
  name echo enqueued 1 >/dev/null
wait_for "the malformed entry reaches the dead letters" sh -c \
  "'$ctasker' queues --json | python3 -c 'import json,sys; assert json.load(sys.stdin)[\"dead\"] == 1'"
expect 0 "dead list --json" "$ctasker" dead list --json
json "$dir/out" "len(j) == 1 and j[0]['id'] == '11111111-1111-4111-8111-111111111111' and
  'kwargs' in j[0]['reason']" && ok "dead list shows the entry and why" ||
  fail "dead list: $(cat "$dir/out")"
bad=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['dead_entry'])" "$dir/out")
expect 0 "dead show" "$ctasker" dead show "$bad"
has "$dir/out" "reason" "dead show prints the fields"
expect 2 "dead retry of a malformed entry" "$ctasker" dead retry "$bad"
expect 5 "dead show of no such entry" "$ctasker" dead show 1-1
# A dead letter of a whole task (as the delivery limit writes them) is retried.
good=$(rcli XADD 'ctasker:{default}:dead' '*' reason 'delivered 6 times, more than 5' \
  stream low entry 1-1 id 22222222-2222-4222-8222-222222222222 name echo \
  kwargs '{"again":true}' enqueued 1)
expect 0 "dead retry" "$ctasker" dead retry "$good"
has "$dir/out" "22222222-2222-4222-8222-222222222222" "dead retry prints the task id"
expect 0 "the retried task completes" "$ctasker" wait 22222222-2222-4222-8222-222222222222 \
  --timeout 30
expect 0 "its status" "$ctasker" status --json 22222222-2222-4222-8222-222222222222
json "$dir/out" "j[0]['result'] == {'again': True}" && ok "the retried task ran" ||
  fail "retried: $(cat "$dir/out")"
expect 0 "dead purge --all" "$ctasker" dead purge --all --json
json "$dir/out" "j['removed'] == 1" && ok "purge removed the one left" || fail "purge: $(cat "$dir/out")"
expect 0 "dead list after purge" "$ctasker" dead list --json
json "$dir/out" "j == []" && ok "no dead letters left" || fail "dead list: $(cat "$dir/out")"
# A name that is not UTF-8 (Latin-1 "caf\xe9", from some other producer)
# makes the entry malformed: it is buried rather than run, and its metrics
# label carries U+FFFD instead of the bad byte (checked below), so the page
# stays valid for Prometheus. redis-cli reads \xNN escapes from its input.
printf '%s\n' 'XADD ctasker:{default}:stream:normal * id 33333333-3333-4333-8333-333333333333 name "caf\xe9" kwargs {} enqueued 1' |
  rcli >/dev/null
wait_for "an entry whose name is not UTF-8 reaches the dead letters" sh -c \
  "'$ctasker' queues --json | python3 -c 'import json,sys; assert json.load(sys.stdin)[\"dead\"] == 1'"

# Deadlines: a call and a wait that time out exit 4 and say so; on a
# terminal, wait draws a progress bar.
expect 4 "a call that times out" "$ctasker" call sleep '{"seconds": 2}' --timeout 0.3
has "$dir/err" "no result within 0.3 s" "a call that times out says so"
expect 0 "submit a task for a wait" "$ctasker" submit sleep '{"seconds": 2}'
slow=$(cat "$dir/out")
expect 4 "a wait that times out" "$ctasker" wait "$slow" --timeout 0.3
has "$dir/err" "1 of 1 tasks still not ended" "a wait that times out says so"
if command -v script >/dev/null; then
  expect 0 "wait on a terminal" script -qec "'$ctasker' wait '$slow' '$id' --timeout 30" /dev/null
  has "$dir/out" "] 2/2 ended" "wait draws a progress bar on a terminal"
  grep -q "$slow completed" "$dir/out" && fail "wait printed lines on a terminal" ||
    ok "wait prints no lines on a terminal"
else
  echo "skip - script(1) not installed: no terminal for wait's progress bar"
fi

# Metrics.
port=$(grep -o 'metrics at http://127.0.0.1:[0-9]*' "$dir/w1.log" | grep -o '[0-9]*$')
if curl -sf "http://127.0.0.1:$port/metrics" -o "$dir/metrics"; then
  ok "metrics scraped"
else
  fail "metrics not served on port '$port'"
fi
has "$dir/metrics" 'ctasker_tasks_completed_total{queue="default",name="add"} 1' \
  "metrics count the completed add"
has "$dir/metrics" 'ctasker_tasks_failed_total{queue="default",name="fail"} 2' \
  "metrics count the failed call"
has "$dir/metrics" 'ctasker_task_run_seconds_count{queue="default",name="echo"} 2' \
  "metrics have the run-time histogram"
has "$dir/metrics" 'ctasker_tasks_retried_total{queue="default",name="fail"} 1' \
  "metrics count the retry"
has "$dir/metrics" 'ctasker_queue_ready{queue="default",level="normal"} 0' \
  "metrics have the queue's counts"
has "$dir/metrics" 'ctasker_supervisor_threads ' "metrics have the supervisor's statistics"
has "$dir/metrics" 'ctasker_tasks_dead_total{queue="default",name="echo"} 1' \
  "metrics count the entry buried in the dead letters, by its name"
has "$dir/metrics" 'ctasker_tasks_dead_total{queue="default",name="add"} 0' \
  "a name with no dead letters counts none"
has "$dir/metrics" "$(printf 'ctasker_tasks_dead_total{queue="default",name="caf\357\277\275"} 1')" \
  "a dead entry's name that is not UTF-8 is labelled with U+FFFD"
has "$dir/metrics" 'ctasker_process_children 2' "metrics have the process pool's children"
has "$dir/metrics" 'ctasker_process_children_forked_total 2' \
  "metrics count the children forked"
if command -v promtool >/dev/null; then
  if promtool check metrics <"$dir/metrics" >"$dir/promtool" 2>&1; then
    ok "promtool check metrics"
  else
    fail "promtool check metrics"
    cat "$dir/promtool"
  fi
elif [ "${CI:-}" = true ]; then
  fail "promtool is missing (Debian's prometheus package)"
else
  echo "skip - promtool not installed"
fi
curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other" >"$dir/code"
has "$dir/code" 404 "another path is 404"

# SIGTERM mid-task: the running task ends and its result is stored.
expect 0 "submit a long task" "$ctasker" submit sleep '{"seconds": 2}'
long=$(cat "$dir/out")
wait_for "it runs" status_is "$long" running
stop_worker 0 "SIGTERM drains and exits 0"
status_is "$long" completed && ok "the task running at SIGTERM completed" ||
  fail "after the drain: $(cat "$dir/st")"
has "$dir/w1.log" "draining" "the drain is logged"

# A second signal stops at once: the running task stays pending in Redis.
# Its threads are left running by design (_exit), which ThreadSanitizer
# would report as leaked: not for this worker.
TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}report_thread_leaks=0" \
  start_worker "$dir/w2.file" --log-file "$dir/w2.file" --grace 60
expect 0 "submit a longer task" "$ctasker" submit sleep '{"seconds": 60}' --priority low
left=$(cat "$dir/out")
wait_for "it runs too" status_is "$left" running
mv "$dir/w2.file" "$dir/w2.old"
kill -HUP "$worker_pid"
wait_for "SIGHUP opens the log file again" grep -q "log reopened" "$dir/w2.file"
kill -TERM "$worker_pid"
wait_for "the drain starts" grep -q "draining" "$dir/w2.file"
stop_worker 1 "a second SIGTERM stops at once with exit 1"
expect 0 "queues after the fast stop" "$ctasker" queues --json
json "$dir/out" "[l for l in j['levels'] if l['level'] == 'low'][0]['pending'] == 1" &&
  ok "the abandoned task is left pending for another worker" || fail "queues: $(cat "$dir/out")"

# A grace that runs out: exit 4, and the task still running is left
# pending for another worker (the one abandoned above is left alone:
# its lease of 30 s outlasts this part).
TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}report_thread_leaks=0" \
  start_worker "$dir/w3.log" --grace 1
expect 0 "submit a task longer than the grace" "$ctasker" submit sleep '{"seconds": 60}' \
  --priority critical
over=$(cat "$dir/out")
wait_for "it runs as well" status_is "$over" running
stop_worker 4 "a drain whose grace runs out exits 4"
has "$dir/w3.log" "ran out" "the grace running out is logged"
status_is "$over" running && ok "the task is not marked ended" || fail "over: $(cat "$dir/st")"
expect 0 "queues after the grace ran out" "$ctasker" queues --json
json "$dir/out" "[l for l in j['levels'] if l['level'] == 'critical'][0]['pending'] == 1" &&
  ok "the task the grace cut short is left pending" || fail "queues: $(cat "$dir/out")"

# A grace of 0 stops at once: exit 4 with the task left running. It said
# "every running task ended", then waited for the task and exited 0.
TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}report_thread_leaks=0" \
  start_worker "$dir/w5.log" --queue qg0 --grace 0
expect 0 "submit a task for a grace of 0" "$ctasker" submit sleep '{"seconds": 60}' --queue qg0
cut=$(cat "$dir/out")
runs_in_qg0() {
  "$ctasker" status --json --queue qg0 "$cut" >"$dir/st" 2>/dev/null &&
    json "$dir/st" "j[0]['status'] == 'running'"
}
wait_for "it runs" runs_in_qg0
stop_worker 4 "a drain with a grace of 0 exits 4 at once"
has "$dir/w5.log" "ran out" "the grace of 0 running out is logged"

# Reservations and timeouts of the supervisor: with one pool thread and
# one reserved for normal tasks, two normal tasks run at once; one that
# runs past --timeout-warning is logged. A queue of its own, so that the
# tasks abandoned above stay out of its way.
start_worker "$dir/w4.log" --queue q4 --threads 1 --reserve-normal 1 --concurrency 2 \
  --timeout-warning 0.5
expect 0 "submit a first normal task" "$ctasker" submit sleep '{"seconds": 3}' --queue q4
r1=$(cat "$dir/out")
expect 0 "submit a second normal task" "$ctasker" submit sleep '{"seconds": 3}' --queue q4
r2=$(cat "$dir/out")
both_running() {
  "$ctasker" status --json --queue q4 "$r1" "$r2" >"$dir/st" 2>/dev/null &&
    json "$dir/st" "[t['status'] for t in j] == ['running', 'running']"
}
wait_for "the reserved thread runs the second normal task beside the first" both_running
wait_for "a task past --timeout-warning is logged" grep -q "longer than the warning timeout" \
  "$dir/w4.log"
stop_worker 0 "the worker with reservations drains and exits 0"
expect 2 "a bad --reserve-high" "$ctasker" worker --handlers "$handlers" --reserve-high lots
has "$dir/err" "--reserve-high: not a number" "a bad --reserve-high says so"

# queues --watch shows the queue again and again until interrupted: a
# change made while it runs shows up in a later table.
"$ctasker" queues --json --watch=0.2 >"$dir/watch" 2>"$dir/watch.err" &
watch_pid=$!
delayed_now() { # the delayed count of the last table shown is $1
  python3 - "$dir/watch" "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
dec, i, last = json.JSONDecoder(), 0, None
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    try:
        last, i = dec.raw_decode(text, i)
    except ValueError:
        break  # a table still being written
sys.exit(0 if last is not None and last['delayed'] == int(sys.argv[2]) else 1)
PY
}
wait_for "queues --watch shows the queue" delayed_now 1
expect 0 "submit another delayed task" "$ctasker" submit sleep '{"seconds": 0}' --delay 3600
wait_for "queues --watch shows the change" delayed_now 2
kill -0 "$watch_pid" 2>/dev/null && ok "queues --watch keeps going" || fail "queues --watch ended"
kill -TERM "$watch_pid"
wait "$watch_pid" 2>/dev/null
watch_pid=
[ "$(grep -c '"queue":' "$dir/watch")" -ge 2 ] && ok "queues --watch showed it more than once" ||
  fail "queues --watch: $(cat "$dir/watch")"

# Redis goes away under a worker of eight queues: a scrape reads it
# unreachable once, not once a queue (with a command timeout of 1 s, it
# took 8 s), and SIGTERM stops at once instead of waiting, queue after
# queue, for each fetch and each last write to time out (over 30 s).
queues=(r1 r2 r3 r4 r5 r6 r7 r8)
start_worker "$dir/w6.log" "${queues[@]/#/--queue=}" --redis-timeout 1 --metrics 127.0.0.1:0
port=$(grep -o 'metrics at http://127.0.0.1:[0-9]*' "$dir/w6.log" | grep -o '[0-9]*$')
kill -TERM "$redis_pid" && wait "$redis_pid"
redis_pid=
wait_for "the worker sees Redis gone" grep -q "connection lost" "$dir/w6.log"
if curl -sf --max-time 5 "http://127.0.0.1:$port/metrics" -o "$dir/metrics6"; then
  ok "a scrape while Redis is down does not wait for it once a queue"
else
  fail "a scrape while Redis is down took over 5 s"
fi
for q in "${queues[@]}"; do
  has "$dir/metrics6" "ctasker_redis_up{queue=\"$q\"} 0" "metrics say queue $q cannot be read"
done
kill -TERM "$worker_pid"
for _ in $(seq 80); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$worker_pid" 2>/dev/null; then
  fail "SIGTERM while Redis is down: the worker still runs after 8 s"
  kill -KILL "$worker_pid"
  wait "$worker_pid" 2>/dev/null
else
  wait "$worker_pid"
  rc=$?
  [ "$rc" -eq 0 ] && ok "SIGTERM while Redis is down stops within 8 s, exit 0" ||
    fail "SIGTERM while Redis is down: exit $rc, not 0"
fi
worker_pid=
has "$dir/w6.log" "stopped while Redis is unreachable" "the stop says what it could not write"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
