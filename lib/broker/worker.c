/* The broker's worker: registered handlers, a fetch thread, tasks run
 * through the supervisor, results stored before the entry is acknowledged.
 *
 * Threads. The fetch thread owns its own connection (`fetch`), so that its
 * blocking read never holds up the handle's connection, which the tasks use
 * for their writes. It loops: wait for a free slot; run the fetch script,
 * which reads each stream in turn, highest class first, through the
 * consumer group, taking no more entries than there are free slots (one
 * XREADGROUP per stream, each with what is left: COUNT applies per stream);
 * if it found nothing, or fewer entries than that with no take-over cut
 * short (every stream then read to its end: a second fetch would find
 * nothing), the script returns each stream's newest entry id (and the wake
 * stream's; 0-0 for an empty one; and always the earliest due time of the
 * delayed set), and the thread blocks in XREAD on exactly those ids, which
 * ends as soon as any stream gets a newer entry (no race with an entry
 * written between the two, and no polling: the block is at most 1 s long
 * only so that a stop is seen, and no longer than until the earliest
 * delayed task is due: it is that task's timer). A reply is not trusted to
 * hold no more entries than asked for: the rest stay pending. Entries are
 * decoded by the codec and started on the connection's loop thread, within
 * the reply callback; the fetch thread buries what is to be buried.
 *
 * Delays. Before a fetch, if the last one saw a due time now past in the
 * delayed set (delays, ETAs, retries waiting for their backoff; every
 * fetch reply says its earliest), the thread moves the due members into
 * their streams, one script per task whose ZREM decides, among all the
 * workers doing the same, which one writes the entry.
 *
 * Leases. The fetch script first takes over, in each stream, entries whose
 * owner has been silent past the lease (XAUTOCLAIM), and returns those
 * delivered more than max_deliveries times for the bury script. It does
 * so in the first fetch, then in the first fetch after each
 * min(lease / 3, 1 s), not in every one: the scan costs Redis as much as
 * the rest of a fetch, and an entry's lease is counted in tens of
 * seconds (it is taken over at most that much later; an idle worker
 * fetched only once a second anyway). A take-over pass that the count or
 * XAUTOCLAIM's scan limit cut short goes on in the next fetch, from where
 * it stopped in each stream (fetch_script). While
 * tasks run, a timer on the handle's loop thread (never a pool thread, so
 * a CPU-bound handler cannot starve it) renews their leases every
 * lease / 3 with XCLAIM JUSTID, only where this consumer still owns the
 * entry; a run whose entry another worker has taken over is marked lost
 * and asked to cancel. A second timer there fires at the earliest run
 * deadline (a task's timeout) and asks that run to cancel. A third marks
 * RUNNING the records of the runs that have lasted MARK_AFTER (the fetch
 * writes no record, and a shorter run's record goes from QUEUED to its
 * end at once).
 *
 * The fetch script returns, with each entry, the number of the run it is
 * for (from the entry and its deliveries). A task
 * then runs on a pool thread (run_task): call the handler, then either
 * hand the result to the store thread (store.c), which stores it with the
 * complete script, together with any other results waiting to be stored
 * (first completion wins; then the entries are acknowledged and deleted,
 * never one still pending or not yet delivered), or, for a failed run
 * with runs left and its entry still this worker's, put the task back
 * into the delayed set with the retry script (which acknowledges the
 * entry too); a lost run stores nothing. The pool thread does not wait for the store:
 * it returns the result to the supervisor at once and takes its next
 * task. A job is held by its supervisor task, until its on_done (which
 * runs whether it ran or was canceled by a supervisor stop: its entry then
 * stays pending), and by its result while that is being stored; the last
 * to let go frees the slot. So a slot stays taken, and its lease renewed,
 * until the result is stored, the fetch never takes more than free slots,
 * and a stop waits for the stores as for the runs.
 *
 * Lock: w->lock guards running, running_jobs, stopping, fetch_done,
 * blocked_id, mark_armed and each running job's task, run_deadline,
 * run_since, run_since_ms, marked, lost, timed_out and holds. The calls
 * made under it are the renewal's and the marks' hiredis sends, which
 * format the command into hiredis's buffer and call nothing back,
 * and ct_task_cancel() of a running task, which only sets its flag (the
 * supervisor never calls back into the worker with a lock of its own
 * held: task_done runs after the task has ended).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "base/opts.h"
#include "broker-internal.h"
#include "ctasker/result.h"
#include "ctasker/task.h"
#include "message.h"
#include "metrics.h"
#include "script.h"
#include "store.h"

#define DEFAULT_CONCURRENCY 4
#define DEFAULT_LEASE 30.0
#define DEFAULT_MAX_DELIVERIES 5
#define MIN_LEASE 0.1
#define BLOCK_MS "1000"      /* longest blocking read: how soon a stop is seen */
#define BLOCK_SECONDS 1.0
#define DEAD_MAX "10000"     /* about this many dead letters are kept */
/* Most values a script passes to one command with unpack(): Lua's C stack
 * holds 8000, and a script that needs more fails, after what it wrote. */
#define UNPACK_MAX "7900"
#define MAX_KWARGS (16u << 20) /* bytes of kwargs a worker accepts */
#define STORE_TRIES 3        /* attempts to store a result */
#define DEFAULT_TTL "86400"  /* a record without its own TTL field */
#define PROMOTE_BATCH 64     /* due delayed tasks moved per round */
#define DEFAULT_BACKOFF 1.0  /* seconds before a first retry */
#define DEFAULT_BACKOFF_MAX 3600.0 /* longest pause before a retry */
#define PROMOTE_BATCH_S "64"
#define TAKEOVER_EVERY_MAX 1.0 /* longest pause, seconds, between take-overs */
#define MARK_AFTER 0.1     /* seconds a run lasts before its record says RUNNING */
#define MARK_IDLE_KEEP 1.0 /* seconds the mark timer keeps ticking with no run */

static const int level_priority[CT__BLEVELS] = {CT_PRIORITY_CRITICAL, CT_PRIORITY_HIGH,
                                                CT_PRIORITY_NORMAL, CT_PRIORITY_LOW};

/* KEYS: stream, dead letters, and, when the entry names a task (a UUID
 * id), its record and its done list. ARGV: entry id, group, reason, level
 * name, now (ms), exception class. The entry goes to the dead letters with
 * the reason, where it came from, and its own fields after those, and is
 * acknowledged and deleted. Its task becomes DEAD with an exception of
 * that class saying why, unless it has ended already (the first completion
 * wins), rather than queued for ever; a caller who waits for it (the entry
 * has a deadline) is woken as by a completion. Keys of another type (a
 * foreign producer's doing) are left alone, and of an entry with more
 * fields than one command can take, those beyond are left out (`dropped`
 * says how many values), so that one entry cannot make the script fail
 * (it failed, and the entry was delivered again after every lease).
 * Returns the entry's name field ('' if none), so that the worker counts
 * what was buried by the name the entry really had. */
static const char bury_script[] =
    "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])\n"
    "local args = {'reason', ARGV[3], 'stream', ARGV[4], 'entry', ARGV[1]}\n"
    "local waited, name\n"
    "if e[1] then\n"
    "  local f = e[1][2]\n"
    "  for j = 1, #f, 2 do\n"
    "    if f[j] == 'deadline' then waited = true end\n"
    "    if f[j] == 'name' then name = f[j + 1] end\n"
    "    if #args < " UNPACK_MAX " - 2 then\n"
    "      args[#args + 1] = f[j]\n"
    "      args[#args + 1] = f[j + 1]\n"
    "    end\n"
    "  end\n"
    "  if #f + 6 > #args then\n"
    "    args[#args + 1] = 'dropped'\n"
    "    args[#args + 1] = tostring(#f + 6 - #args)\n"
    "  end\n"
    "end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', " DEAD_MAX ", '*', unpack(args))\n"
    "if KEYS[3] and redis.call('TYPE', KEYS[3]).ok == 'hash' then\n"
    "  local s = redis.call('HGET', KEYS[3], 'status')\n"
    "  if s ~= 'completed' and s ~= 'failed' and s ~= 'dead' and s ~= 'expired' then\n"
    "    redis.call('HSET', KEYS[3], 'status', 'dead', 'finished', ARGV[5], 'result',\n"
    "      cjson.encode({exception = {class = ARGV[6], args = {ARGV[3]}, str = ARGV[3]}}))\n"
    "    redis.call('EXPIRE', KEYS[3], redis.call('HGET', KEYS[3], 'ttl') or " DEFAULT_TTL ")\n"
    "  end\n"
    "end\n"
    "if KEYS[4] and waited then\n"
    "  local t = redis.call('TYPE', KEYS[4]).ok\n"
    "  if t == 'none' or t == 'list' then\n"
    "    redis.call('RPUSH', KEYS[4], 'dead')\n"
    "    redis.call('EXPIRE', KEYS[4], 60)\n"
    "  end\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return name or ''\n";
static ct__bscript_t bury_lua = CT__BSCRIPT_INIT(bury_script);

/* KEYS: the streams, highest class first, the delayed set, the wake
 * stream. ARGV: group, consumer, count, lease (ms), max deliveries, '1' to
 * take over, then, per stream, where its take-over goes on (the cursor of
 * XAUTOCLAIM: '0-0' to begin; '' when the pass is done in that stream).
 * Per stream: first, if asked to, take over entries idle past the lease
 * (XAUTOCLAIM, from the stream's cursor), then read new ones, never more
 * than count in all (a stream with no entry at all is not read: XLEN costs
 * Redis a fraction of an XREADGROUP, and most streams are empty); an entry
 * taken over that has been delivered more than max deliveries times is
 * returned too, without counting, for the worker to bury (with the bury
 * script, which names every key it touches). Returns
 * {1, {{level, id, fields, deliveries, runs}...}, due, more, ids, fresh,
 * cursors} (the entries taken over, then fresh: {{level, {{id, fields}...}}
 * ...}, the new entries of each stream read, as XREADGROUP gave them) or,
 * having found nothing, {0, ids, due, more, cursors}, where ids are the newest entry
 * ids of the streams and the wake stream, for the worker to block on, when
 * nothing new is left to read (found nothing, or fewer than count with no
 * take-over cut short), and empty otherwise (the worker fetches again),
 * due is the earliest due time in the delayed set or '' (so that the
 * worker moves due tasks only when some are due), and more
 * is 1 if the take-over pass is not done in every stream (cut short by the
 * count, or by XAUTOCLAIM's own limit of ten entries scanned per entry
 * asked for): the next fetch goes on from the cursors returned (the
 * arguments, where no take-over was asked for). Going on from where the
 * last one stopped, not from the start, a pass ends even when a stream's
 * pending entries are mostly live ones (another worker's running tasks):
 * begun again at each fetch, it scanned the same first entries each time,
 * never reached an idle entry behind them, and, never done, kept the
 * worker fetching without a pause. A stream that new entries of a higher
 * one kept the fetch from reaching waits for the next take-over, as its
 * new entries wait.
 *
 * A stream's newest entry id (0-0 for an empty or missing stream) serves
 * the blocking read as well as its last-generated id would: XREAD returns
 * entries newer than the id, deleted ones never come back, and a new
 * entry's id is above every id the stream ever had. It is read with XLEN
 * and XREVRANGE, not from XINFO STREAM, whose reply (first and last
 * entries, groups, counters) cost Redis about 8 us a stream in a script
 * (XLEN and XREVRANGE: 1 and 4 us; measured on streams of one entry),
 * and only where the fetch has not learnt it already (newest): a stream
 * whose XLEN was 0, or whose XREADGROUP returned fewer entries than it
 * asked for, so that its last entry is the stream's newest (it returns
 * every entry past the group's last delivered one, in order, up to the
 * count). An idle worker that takes one new task, the other streams
 * and the wake stream empty, thus reads no XREVRANGE (the script's time
 * for such a fetch, median of 5 runs: 69 -> 64 us).
 *
 * Each entry taken over and returned for the worker to start (not to
 * bury) comes with its run's number, `runs`: the entry's attempt field
 * (the run a retry's entry is for; 1 when absent, or not decimal digits
 * from 1 to 10^9) plus its deliveries before this one (runs whose worker
 * died or lost the lease before they ended), 0 for an entry to bury. A new
 * entry has had no delivery before: its run's number is its attempt field,
 * which the worker reads (ct__bmsg_attempt(), the same rule), so that new
 * entries go back as the server read them, not copied into a table of
 * their own each (that cost Redis about 1 us a task of 9: medians of 8
 * alternated runs, 64 entries a fetch). The fetch writes no task
 * record (and so touches no key that is not among KEYS): a run's record
 * is written when it ends, and marked RUNNING before that only if it
 * lasts (mark_check()). Marking each record in the fetch took a read and
 * a write of every task's record, a quarter of the commands a task costs
 * Redis, for a state that a short run leaves before anyone can see it. */
static const char fetch_script[] =
    "local want = tonumber(ARGV[3])\n"
    "local out = {}\n"
    "local newest = {}\n"
    "local more = 0\n"
    "local fresh = {}\n"
    "local cursors = {ARGV[7], ARGV[8], ARGV[9], ARGV[10]}\n"
    "local function run_number(f, deliveries)\n"
    "  local a = 1\n"
    "  for j = 1, #f, 2 do\n"
    "    if f[j] == 'attempt' then\n"
    "      local v = f[j + 1]\n"
    "      a = #v <= 18 and string.match(v, '^%d+$') and tonumber(v) or 1\n"
    "    end\n"
    "  end\n"
    "  if a < 1 or a > 1e9 then a = 1 end\n"
    "  return a + deliveries - 1\n"
    "end\n"
    "for i = 1, 4 do\n"
    "  if want <= 0 then break end\n"
    "  if ARGV[6] == '1' and cursors[i] ~= '' then\n"
    "    local c = redis.call('XAUTOCLAIM', KEYS[i], ARGV[1], ARGV[2], ARGV[4], cursors[i],"
    " 'COUNT', want)\n"
    "    for _, e in ipairs(c[2]) do\n"
    "      local p = redis.call('XPENDING', KEYS[i], ARGV[1], e[1], e[1], 1)\n"
    "      local n = p[1] and p[1][4] or 1\n"
    "      local runs = 0\n"
    "      if n <= tonumber(ARGV[5]) then\n"
    "        want = want - 1\n"
    "        runs = run_number(e[2], n)\n"
    "      end\n"
    "      out[#out + 1] = {i, e[1], e[2], n, runs}\n"
    "    end\n"
    "    cursors[i] = c[1] ~= '0-0' and c[1] or ''\n"
    "  end\n"
    "  if want > 0 and redis.call('XLEN', KEYS[i]) == 0 then\n"
    "    newest[i] = '0-0'\n"
    "  elseif want > 0 then\n"
    "    local asked = want\n"
    "    local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want,"
    " 'STREAMS', KEYS[i], '>')\n"
    "    local got = r and r[1][2] or {}\n"
    "    if #got > 0 then fresh[#fresh + 1] = {i, got} end\n"
    "    want = want - #got\n"
    "    if #got > 0 and #got < asked then newest[i] = got[#got][1] end\n"
    "  end\n"
    "end\n"
    "for i = 1, 4 do\n"
    "  if ARGV[6] == '1' and cursors[i] ~= '' then more = 1 end\n"
    "end\n"
    "local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')\n"
    "local ids = {}\n"
    "if #out + #fresh == 0 or (want > 0 and more == 0) then\n"
    "  for i = 1, 5 do\n"
    "    local k = KEYS[i < 5 and i or 6]\n"
    "    ids[i] = newest[i] or '0-0'\n"
    "    if not newest[i] and redis.call('XLEN', k) > 0 then\n"
    "      ids[i] = redis.call('XREVRANGE', k, '+', '-', 'COUNT', 1)[1][1]\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if #out + #fresh > 0 then return {1, out, first[2] or '', more, ids, fresh, cursors} end\n"
    "return {0, ids, first[2] or '', more, cursors}\n";
static ct__bscript_t fetch_lua = CT__BSCRIPT_INIT(fetch_script);

/* KEYS: a stream. ARGV: group, consumer, entry ids. Renews this consumer's
 * lease on each entry it still owns (XCLAIM JUSTID resets the idle time
 * without counting a delivery); returns the ids another consumer has taken
 * over. An id no longer pending has ended and is left alone. */
static const char renew_script[] =
    "local lost = {}\n"
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if p[1] and p[1][2] == ARGV[2] then\n"
    "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
    "  elseif p[1] then\n"
    "    lost[#lost + 1] = ARGV[i]\n"
    "  end\n"
    "end\n"
    "return lost\n";

/* KEYS: the workers set, this worker's liveness record. ARGV: consumer,
 * record (JSON), TTL (ms), now (ms). Refreshes the record and this
 * worker's place in the set (scored by expiry), and drops members whose
 * records have expired: listing live workers never needs a scan. */
static const char alive_script[] =
    "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])\n"
    "redis.call('ZADD', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])\n"
    "return 1\n";

/* KEYS: record, stream, delayed set, wake stream. ARGV: entry id, group,
 * the run's exception (JSON), due (ms), level name, now (ms), default TTL
 * (s), the run's number, the next run's, the run's start (ms), consumer.
 * A failed run to be retried, if its entry is still this consumer's (one
 * that another worker has taken over, its loss not yet learnt from a
 * renewal, is the new owner's to run, end or retry: returns 0, and writes
 * nothing; acknowledging that entry and queuing a retry of its own made a
 * run more, after the new owner's). Then, unless the record is terminal
 * already (the first completion wins), the entry's fields go back into the
 * delayed set, due after the backoff, with the next run's number as their
 * attempt field (replacing the entry's own), the record says RETRYING with
 * the error and the runs so far, and is kept for the wait too; then the
 * entry is acknowledged and deleted, as by a completion. Returns 1. */
static const char retry_script[] =
    "local p = redis.call('XPENDING', KEYS[2], ARGV[2], ARGV[1], ARGV[1], 1)\n"
    "if not p[1] or p[1][2] ~= ARGV[11] then return 0 end\n"
    "local s = redis.call('HGET', KEYS[1], 'status')\n"
    "if s ~= 'completed' and s ~= 'failed' and s ~= 'dead' and s ~= 'expired' then\n"
    "  local e = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])\n"
    "  if e[1] then\n"
    "    local m, f = {ARGV[5]}, e[1][2]\n"
    "    for j = 1, #f, 2 do\n"
    "      if f[j] ~= 'attempt' then\n"
    "        m[#m + 1] = f[j]\n"
    "        m[#m + 1] = f[j + 1]\n"
    "      end\n"
    "    end\n"
    "    m[#m + 1] = 'attempt'\n"
    "    m[#m + 1] = ARGV[9]\n"
    "    redis.call('ZADD', KEYS[3], ARGV[4], cjson.encode(m))\n"
    "    redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100, '*', 'due', ARGV[4])\n"
    "    if s then\n"
    "      redis.call('HSET', KEYS[1], 'status', 'retrying', 'error', ARGV[3], 'due', ARGV[4],"
    " 'attempts', ARGV[8], 'started', ARGV[10])\n"
    "      local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl') or ARGV[7]) or 86400\n"
    "      redis.call('EXPIRE', KEYS[1],"
    " ttl + math.ceil((tonumber(ARGV[4]) - tonumber(ARGV[6])) / 1000))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])\n"
    "redis.call('XDEL', KEYS[2], ARGV[1])\n"
    "return 1\n";
static ct__bscript_t retry_lua = CT__BSCRIPT_INIT(retry_script);

/* KEYS: task records. ARGV: per record, the run's number and its start
 * (ms). Marks each record that is not terminal RUNNING, with that run's
 * number as its attempts; a record that is gone, or a key of another type
 * (another program's doing: pcall), is left alone. Sent (rarely: only for
 * runs that last) as EVAL, from the handle's loop thread. */
static const char mark_script[] =
    "for i = 1, #KEYS do\n"
    "  local s = redis.pcall('HGET', KEYS[i], 'status')\n"
    "  if s == 'queued' or s == 'running' or s == 'delayed' or s == 'retrying' then\n"
    "    redis.call('HSET', KEYS[i], 'status', 'running', 'attempts', ARGV[2 * i - 1],"
    " 'started', ARGV[2 * i])\n"
    "  end\n"
    "end\n"
    "return #KEYS\n";

/* KEYS: delayed set, the task's stream, its record, dead letters. ARGV:
 * the member (a JSON array: level name, then the entry's fields and
 * values). Moves one due task into its stream, once: of several workers
 * promoting it, only the one whose ZREM removed it writes the entry. A
 * record still waiting says QUEUED. What could fail comes before the ZREM,
 * which Redis keeps when a script fails after it (the task was then in no
 * stream and no set): a member with more values than XADD can be given,
 * or whose record is of another type, goes to the dead letters instead.
 * Returns 1 if this call moved it, 2 if it buried it, 0 if another worker
 * had taken it. */
static const char promote_script[] =
    "local m = cjson.decode(ARGV[1])\n"
    "local t = redis.call('TYPE', KEYS[3]).ok\n"
    "if #m > " UNPACK_MAX " or (t ~= 'hash' and t ~= 'none') then\n"
    "  if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', " DEAD_MAX ", '*', 'reason',"
    " #m > " UNPACK_MAX " and 'too many fields' or 'its record is not a hash',"
    " 'stream', 'delayed', 'member', ARGV[1])\n"
    "  return 2\n"
    "end\n"
    "if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "local s = redis.call('HGET', KEYS[3], 'status')\n"
    "if s == 'delayed' or s == 'retrying' then\n"
    "  redis.call('HSET', KEYS[3], 'status', 'queued')\n"
    "end\n"
    "redis.call('XADD', KEYS[2], '*', unpack(m, 2))\n"
    "return 1\n";
static ct__bscript_t promote_lua = CT__BSCRIPT_INIT(promote_script);

/* KEYS: delayed set, dead letters. ARGV: member, reason. A member that is
 * not one (another program's doing) goes to the dead letters. Returns 1 if
 * this call moved it, 0 if another worker had. */
static const char bury_member_script[] =
    "if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', " DEAD_MAX ", '*', 'reason', ARGV[2],"
    " 'stream', 'delayed', 'member', ARGV[1])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";
static ct__bscript_t bury_member_lua = CT__BSCRIPT_INIT(bury_member_script);

typedef struct job job_t;
struct job {
  job_t *next;               /* in the fetch's list, then in w->running_jobs */
  job_t *prev;               /* in w->running_jobs */
  ct__bworker_t *w;
  int level;
  char entry[48];            /* the stream entry id */
  const char *reason;        /* to bury: why (static, or why[]), else NULL */
  const char *bury_class;    /* to bury: the exception class for its task, else NULL */
  char why[64];              /* a reason made for this entry */
  bool has_tid;              /* to bury: msg.id names its task */
  bool over_delivered;       /* to bury: delivered more than max_deliveries times */
  long long attempts;        /* this run's number (the fetch script's: the entry's attempt
                                field and its earlier deliveries); 0 for an entry to bury */
  char runs[24];             /* attempts, as text, for the record */
  ct__bmsg_t msg;
  const ct__bhandler_t *h;   /* NULL: no handler here */
  ct_task_t *task;           /* lock: the supervisor task while the handler runs */
  double run_deadline;       /* lock: ct_now() past which the run times out; 0: none */
  bool lost;                 /* lock: another worker has taken the entry over */
  bool timed_out;            /* lock: the run overran its timeout */
  int holds;                 /* lock: the supervisor task's, and a result's being stored */
  double started;            /* ct_now() as its handler started, for the END event */
  double run_since;          /* lock: ct_now() as its handler started; 0: not yet */
  char run_since_ms[24];     /* lock: the same, Unix ms, for the record */
  bool marked;               /* lock: its record has been marked RUNNING */
  ct_broker_status_t outcome; /* how its run ended, once it has */
  ct__bstore_req_t req;      /* its result, handed to the store thread */
  char *rec_key, *done_key, *text; /* the request's strings, freed once stored */
  char finished[24];
};

/* What a renewal's reply is about: the worker, and the stream whose
 * entries it renewed (entry ids are per stream: two streams can each have
 * an entry of the same id). */
typedef struct {
  ct__bworker_t *w;
  int level;
} renewal_t;

struct ct__bworker {
  ct_broker_t *b;
  ct__rconn_t *fetch;
  pthread_t thread;
  int concurrency;
  char *consumer;
  char *streams[CT__BLEVELS];
  char *dead;
  char *delayed, *wake; /* the delayed set, the stream that wakes idle workers */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int running;      /* lock: tasks given to the supervisor, not yet done */
  job_t *running_jobs; /* lock: those tasks, for lease renewal */
  ct__bstore_t store;  /* results, on the handle's connection */
  int64_t next_due_ms; /* fetch thread: the earliest due time the last fetch saw;
                          0: none; -1: unknown (move what is due before the next) */
  char takeover_from[CT__BLEVELS][48]; /* fetch thread: where the take-over pass goes
                                          on in each stream ("0-0": from the start) */
  double next_takeover; /* fetch thread: ct_now() from which a fetch takes over
                           entries of silent owners; 0: the first fetch does */
  double lease;
  int max_deliveries;
  ev_timer renew;   /* on the handle's loop: renews the running tasks' leases */
  renewal_t renewals[CT__BLEVELS]; /* I: each stream's renewal replies' data */
  ev_timer watch;   /* on the handle's loop: the earliest run deadline */
  ev_timer mark;    /* on the handle's loop: marks the runs that last RUNNING */
  bool mark_armed;  /* lock: the mark timer is armed, or its arming is on its way */
  double mark_idle_since; /* loop thread: ct_now() of the first tick with no run to
                             watch; 0: one was watched at the last tick */
  bool stopping;    /* lock */
  bool fetch_done;  /* lock: the fetch thread has ended */
  long long blocked_id; /* lock: the fetch connection's client id while it may be
                           blocked in XREAD (for CLIENT UNBLOCK), else 0 */
  bool retired;     /* lock: stopped, renewal ended, liveness record removed */
  long long unwritten;         /* lock: runs whose outcome Redis did not take
                                  (their entries stay pending) */
  long long unwritten_at_stop; /* lock: unwritten as the stop began */
  json_t *names;    /* the handlers' names, for the liveness record */
  bool alive_written; /* the start has (maybe) written the liveness record */
  char *workers_key, *alive_key;
};

/* --- registration ------------------------------------------------------- */

static const ct__bhandler_t *find_handler(const ct_broker_t *b, const char *name) {
  for (const ct__bhandler_t *h = b->handlers; h; h = h->next)
    if (strcmp(h->name, name) == 0)
      return h;
  return NULL;
}

int ct_broker_register(ct_broker_t *b, const char *name, ct_broker_handler_fn fn, void *data) {
  if (!b || !fn || !name || !ct__bmsg_name_ok(name, strlen(name)))
    return CT_EINVAL;
  size_t len = strlen(name);
  ct__bhandler_t *h = malloc(sizeof *h + len + 1);
  if (!h)
    return CT_ENOMEM;
  h->fn = fn;
  h->data = data;
  memcpy(h->name, name, len + 1);
  pthread_mutex_lock(&b->lock);
  int rc = b->worker || find_handler(b, name) ? CT_EBUSY : 0;
  if (rc == 0) {
    h->next = b->handlers;
    b->handlers = h;
  }
  pthread_mutex_unlock(&b->lock);
  if (rc != 0)
    free(h);
  return rc;
}

/* --- replies ------------------------------------------------------------ */

static int ok_reply(const redisReply *r, void *data) {
  (void)data;
  return r->type == REDIS_REPLY_ERROR ? CT_EINVAL : 0;
}

/* An integer reply, into *(long long *)data. */
static int int_reply(const redisReply *r, void *data) {
  if (r->type != REDIS_REPLY_INTEGER)
    return CT_EINVAL;
  *(long long *)data = r->integer;
  return 0;
}

/* XGROUP CREATE's reply: a group that exists already is fine. */
static int group_reply(const redisReply *r, void *data) {
  (void)data;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
    return CT_EINVAL;
  return 0;
}

typedef struct {
  ct__bworker_t *w;
  job_t *jobs;           /* what the fetch took, in order */
  char ids[CT__BLEVELS + 1][48]; /* newest entry ids (streams, wake), if caught_up */
  bool caught_up;        /* no new entry is left unread: block on ids rather than fetch */
  int64_t due_ms;        /* the earliest delayed task's due time; 0: none */
  int want;              /* entries asked for: the free slots */
  bool more;             /* a take-over pass is not done: go on in the next fetch */
  char cursors[CT__BLEVELS][48]; /* where it goes on, per stream ("": done there) */
  int over;              /* entries the reply held beyond those, left pending */
  bool nogroup;          /* the group is gone (the streams were deleted) */
  int started;           /* jobs started as the reply came (start_taken()) */
  bool refused;          /* the supervisor refused one: the rest were not started */
} fetch_t;

/* One fetched entry {level, id, fields} as a job (decoded or malformed). */
/* The task id an entry's fields name, even in an entry that is otherwise
 * malformed (its task is then marked dead), into id; false if none. */
static bool entry_task_id(const ct__bfield_t *f, size_t n, char *id) {
  for (size_t i = 0; i < n; i++)
    if (f[i].name_len == 2 && memcmp(f[i].name, "id", 2) == 0 &&
        ct__bmsg_id_ok(f[i].value, f[i].value_len)) {
      memcpy(id, f[i].value, CT_BROKER_ID_SIZE - 1);
      id[CT_BROKER_ID_SIZE - 1] = '\0';
      return true;
    }
  return false;
}

/* One fetched entry as a job: decoded, or to be buried (malformed, or
 * delivered more than max_deliveries times); NULL if out of memory. runs:
 * its run's number, or -1 for a new entry's (its attempt field). */
static job_t *entry_job(ct__bworker_t *w, long long level, const redisReply *id,
                        const redisReply *fields, long long deliveries, long long runs) {
  job_t *j = calloc(1, sizeof *j);
  if (!j)
    return NULL;
  j->w = w;
  j->level = (int)level - 1;
  memcpy(j->entry, id->str, id->len); /* length checked */
  size_t n;
  ct__bfield_t *f = ct__bfields_of(fields, &n);
  int rc = f ? ct__bmsg_decode(f, n, MAX_KWARGS, &j->msg, &j->reason) : CT_ENOMEM;
  if (f && rc != 0)
    j->has_tid = entry_task_id(f, n, j->msg.id);
  j->attempts = runs >= 0 || !f ? runs : ct__bmsg_attempt(f, n);
  free(f);
  if (rc == CT_ENOMEM) {
    free(j);
    return NULL;
  }
  snprintf(j->runs, sizeof j->runs, "%lld", j->attempts);
  j->over_delivered = deliveries > w->max_deliveries;
  if (j->over_delivered) { /* first: the fetch did not count it as taken */
    snprintf(j->why, sizeof j->why, "delivered %lld times, more than %d", deliveries,
             w->max_deliveries);
    j->reason = j->why;
    j->bury_class = "DeliveryLimit";
    j->has_tid = j->has_tid || rc == 0;
  } else if (rc != 0) {
    j->bury_class = "MalformedTask";
  } else {
    j->h = find_handler(w->b, j->msg.name);
  }
  return j;
}

/* A fetch reply's list of newest entry ids: strings, one per stream and
 * the wake stream at most. */
static bool ids_ok(const redisReply *ids) {
  if (ids->type != REDIS_REPLY_ARRAY || ids->elements > CT__BLEVELS + 1)
    return false;
  for (size_t i = 0; i < ids->elements; i++)
    if (ids->element[i]->type != REDIS_REPLY_STRING)
      return false;
  return true;
}

/* A fetch reply's take-over cursors: an entry id or "", one per stream. */
static bool cursors_ok(const redisReply *cursors) {
  if (cursors->type != REDIS_REPLY_ARRAY || cursors->elements != CT__BLEVELS)
    return false;
  for (size_t i = 0; i < cursors->elements; i++)
    if (cursors->element[i]->type != REDIS_REPLY_STRING ||
        cursors->element[i]->len >= sizeof ((fetch_t *)0)->cursors[0])
      return false;
  return true;
}

static bool level_ok(const redisReply *level) {
  return level->type == REDIS_REPLY_INTEGER && level->integer >= 1 &&
         level->integer <= CT__BLEVELS;
}

/* An entry's id and fields, as the server gives them. */
static bool entry_ok(const redisReply *id, const redisReply *fields) {
  return id->type == REDIS_REPLY_STRING && id->len < sizeof ((job_t *)0)->entry &&
         fields->type == REDIS_REPLY_ARRAY;
}

static bool fetch_reply_ok(const redisReply *r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
      r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_ARRAY)
    return false;
  bool idle = r->element[0]->integer == 0;
  if (r->elements != (idle ? 5u : 7u) || r->element[2]->type != REDIS_REPLY_STRING ||
      r->element[3]->type != REDIS_REPLY_INTEGER || !cursors_ok(r->element[idle ? 4 : 6]))
    return false;
  if (idle)
    return ids_ok(r->element[1]);
  if (!ids_ok(r->element[4]) || r->element[5]->type != REDIS_REPLY_ARRAY)
    return false;
  const redisReply *list = r->element[1];
  for (size_t i = 0; i < list->elements; i++) {
    const redisReply *e = list->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 5 || !level_ok(e->element[0]) ||
        !entry_ok(e->element[1], e->element[2]) || e->element[3]->type != REDIS_REPLY_INTEGER ||
        e->element[4]->type != REDIS_REPLY_INTEGER || e->element[4]->integer < 0)
      return false;
  }
  const redisReply *fresh = r->element[5];
  for (size_t i = 0; i < fresh->elements; i++) {
    const redisReply *g = fresh->element[i];
    if (g->type != REDIS_REPLY_ARRAY || g->elements != 2 || !level_ok(g->element[0]) ||
        g->element[1]->type != REDIS_REPLY_ARRAY)
      return false;
    for (size_t k = 0; k < g->element[1]->elements; k++) {
      const redisReply *e = g->element[1]->element[k];
      if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
          !entry_ok(e->element[0], e->element[1]))
        return false;
    }
  }
  return true;
}

/* Add job j (NULL: out of memory) to a fetch's jobs at *tail, unless more
 * were taken than asked for (counted in *taken). Returns 0 or CT_ENOMEM. */
static int take_entry(fetch_t *f, job_t *j, int *taken, job_t ***tail) {
  if (!j)
    return CT_ENOMEM;
  *taken += !j->over_delivered;
  if (*taken > f->want) {
    f->over++;
    ct__bmsg_clear(&j->msg);
    free(j);
    return 0;
  }
  **tail = j;
  *tail = &j->next;
  return 0;
}

/* Whether this worker runs the entry `entry` of stream `level` (1-based, as
 * the fetch gives it) already. Its own take-over can claim it when its
 * renewals were held up past the lease (the connection down, say): the run
 * goes on, the take-over having renewed its lease as a renewal would; a
 * second run beside it would run the task twice at once, and nothing would
 * cancel either (the entry stays this consumer's). */
static bool running_here(ct__bworker_t *w, long long level, const redisReply *entry) {
  pthread_mutex_lock(&w->lock);
  const job_t *j = w->running_jobs;
  while (j && (j->level != level - 1 || strcmp(j->entry, entry->str) != 0))
    j = j->next;
  pthread_mutex_unlock(&w->lock);
  if (j)
    ct__broker_log(w->b, CT_LOG_WARNING, "entry %s of %s: taken over by this worker, which "
                   "still runs it (its renewals were held up past the lease): the run goes on",
                   entry->str, w->streams[level - 1]);
  return j != NULL;
}

/* The jobs a fetch reply holds, into f->jobs. */
static int take_entries(const redisReply *r, fetch_t *f) {
  if (r->type == REDIS_REPLY_ERROR) {
    f->nogroup = strstr(r->str, "NOGROUP") != NULL;
    return CT_EINVAL;
  }
  if (!fetch_reply_ok(r))
    return CT_EINVAL;
  const redisReply *list = r->element[1];
  f->due_ms = (int64_t)strtod(r->element[2]->str, NULL);
  f->more = r->element[3]->integer != 0;
  const redisReply *cursors = r->element[r->element[0]->integer == 0 ? 4 : 6];
  for (size_t i = 0; i < CT__BLEVELS; i++)
    snprintf(f->cursors[i], sizeof f->cursors[i], "%s", cursors->element[i]->str);
  const redisReply *ids = r->element[0]->integer == 0 ? list : r->element[4];
  f->caught_up = ids->elements > 0;
  for (size_t i = 0; i < ids->elements; i++)
    snprintf(f->ids[i], sizeof f->ids[i], "%s", ids->element[i]->str);
  if (ids == list)
    return 0;
  /* Never more to run than was asked for, whatever the reply holds: the
   * slots were counted. What is over stays pending, this consumer's, and is
   * taken over after a lease like any entry whose owner let it be. */
  job_t **tail = &f->jobs;
  int taken = 0, rc = 0;
  for (size_t i = 0; i < list->elements && rc == 0; i++) {
    redisReply **e = list->element[i]->element;
    if (!running_here(f->w, e[0]->integer, e[1]))
      rc = take_entry(f, entry_job(f->w, e[0]->integer, e[1], e[2], e[3]->integer,
                                   e[4]->integer),
                      &taken, &tail);
  }
  const redisReply *fresh = r->element[5];
  for (size_t i = 0; i < fresh->elements && rc == 0; i++) {
    const redisReply *level = fresh->element[i]->element[0], *got = fresh->element[i]->element[1];
    for (size_t k = 0; k < got->elements && rc == 0; k++) {
      redisReply **e = got->element[k]->element;
      rc = take_entry(f, entry_job(f->w, level->integer, e[0], e[1], 1, -1), &taken, &tail);
    }
  }
  return rc; /* the jobs taken before an error still run; the rest stay pending */
}

static int start_job(ct__bworker_t *w, job_t *j);

/* Start the jobs a fetch took, on the loop thread as its reply comes, and
 * leave on f->jobs those to bury, and, after a refusal, the rest, for the
 * fetch thread (start_fetched()). Waking the fetch thread to start them
 * put a thread hand-off, about 25 us on an idle machine (measured), on
 * every task's way. */
static void start_taken(fetch_t *f) {
  job_t **keep = &f->jobs;
  while (*keep) {
    job_t *j = *keep;
    if (j->bury_class || f->refused) {
      keep = &j->next;
      continue;
    }
    *keep = j->next;
    if (start_job(f->w, j) == 0) /* the job is the task's now, or freed */
      f->started++;
    else
      f->refused = true;
  }
}

static int fetch_reply(const redisReply *r, void *data) {
  fetch_t *f = data;
  int rc = take_entries(r, f);
  start_taken(f); /* what was taken before an error runs too */
  return rc;
}

/* --- commands ----------------------------------------------------------- */

static int eval(ct__rconn_t *c, ct__bscript_t *script, int nkeys, const char *const *keys,
                int nargs, const char *const *args, ct__rconn_reply_fn fn, void *data) {
  const char *argv[24];
  char numkeys[8];
  int argc = 2; /* room for EVALSHA and the SHA1 */
  snprintf(numkeys, sizeof numkeys, "%d", nkeys);
  argv[argc++] = numkeys;
  for (int i = 0; i < nkeys; i++)
    argv[argc++] = keys[i];
  for (int i = 0; i < nargs; i++)
    argv[argc++] = args[i];
  return ct__bscript_run(c, script, 0, argc, argv, NULL, fn, data);
}

static int create_groups(ct__bworker_t *w) {
  for (int i = 0; i < CT__BLEVELS; i++) {
    const char *argv[] = {"XGROUP", "CREATE", w->streams[i], CT__BGROUP, "0", "MKSTREAM"};
    int rc = ct__rconn_command(w->b->conn, 6, argv, NULL, group_reply, NULL);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Add the worker's names (w->names) to the queue's names set: at start,
 * and again when the server has lost its data (its groups were gone:
 * every submission of them was refused, until the worker started again). */
static int publish_names(ct__bworker_t *w) {
  size_t n = json_array_size(w->names);
  const char **argv = calloc(n + 2, sizeof *argv);
  char *key = ct__broker_key(w->b, "names", "");
  int rc = argv && key ? 0 : CT_ENOMEM;
  if (rc == 0) {
    argv[0] = "SADD";
    argv[1] = key;
    for (size_t i = 0; i < n; i++)
      argv[i + 2] = json_string_value(json_array_get(w->names, i));
    rc = ct__rconn_command(w->b->conn, (int)n + 2, argv, NULL, ok_reply, NULL);
  }
  free(argv);
  free(key);
  return rc;
}

/* The bury script's reply: the name the buried entry had, into data (a
 * buffer of BURIED_NAME_MAX bytes; a longer name is cut). */
#define BURIED_NAME_MAX 256 /* bytes of a buried entry's name kept for the observer */
static int bury_reply(const redisReply *r, void *data) {
  if (r->type != REDIS_REPLY_STRING)
    return CT_EINVAL;
  snprintf(data, BURIED_NAME_MAX, "%.*s", (int)r->len, r->str);
  return 0;
}

/* An entry that is malformed or delivered too often goes to the dead
 * letters with the reason, and the task it names is marked DEAD: every
 * key the script touches is one of its KEYS. The observer hears of it. */
static void bury(ct__bworker_t *w, const job_t *j) {
  char *rec = j->has_tid ? ct__broker_key(w->b, "task:", j->msg.id) : NULL;
  char *done = j->has_tid ? ct__broker_key(w->b, "done:", j->msg.id) : NULL;
  const char *keys[] = {w->streams[j->level], w->dead, rec, done};
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)ct__broker_unix_ms());
  const char *args[] = {j->entry, CT__BGROUP, j->reason, ct__blevel_names[j->level], now,
                        j->bury_class};
  char name[BURIED_NAME_MAX] = "";
  ct__broker_log(w->b, CT_LOG_ERROR, "entry %s of stream %s: %s: dead letter", j->entry,
                 ct__blevel_names[j->level], j->reason);
  int rc = j->has_tid && (!rec || !done)
               ? CT_ENOMEM
               : eval(w->fetch, &bury_lua, j->has_tid ? 4 : 2, keys, 6, args, bury_reply, name);
  if (rc != 0)
    ct__broker_log(w->b, CT_LOG_ERROR, "entry %s: cannot move it to the dead letters: %s",
                   j->entry, ct_strerror(rc));
  else
    ct__bmetrics_dead(w->b, name, j->has_tid ? j->msg.id : "", j->level);
  free(rec);
  free(done);
}

/* --- run timeouts ------------------------------------------------------- */

/* Arm a loop timer for the ct_now() time `next` (0: leave it unarmed). */
static void timer_rearm(struct ev_loop *ev, ev_timer *t, double next, double now) {
  ev_timer_stop(ev, t);
  if (next > 0) {
    ev_timer_set(t, fmax(next - now, 0.001), 0.0);
    ev_timer_start(ev, t);
  }
}

/* On the loop thread: time out every run past its deadline (set its flag,
 * ask it to cancel), then arm the watch for the earliest deadline left. */
static void watch_check(ct__bworker_t *w, struct ev_loop *ev) {
  double now = ct_now(), next = 0;
  pthread_mutex_lock(&w->lock);
  for (job_t *j = w->running_jobs; j; j = j->next) {
    if (j->run_deadline <= 0 || j->timed_out)
      continue;
    if (j->run_deadline <= now) {
      j->timed_out = true;
      ct_task_cancel(j->task); /* running: sets its cooperative flag */
    } else if (next == 0 || j->run_deadline < next) {
      next = j->run_deadline;
    }
  }
  pthread_mutex_unlock(&w->lock);
  timer_rearm(ev, &w->watch, next, now);
}

static void on_watch(struct ev_loop *ev, ev_timer *t, int revents) {
  (void)revents;
  watch_check(t->data, ev);
}

/* Posted by a run that has a deadline: (re)arm the watch for it. */
static void watch_arm(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  watch_check(data, ev);
}

/* --- RUNNING marks ------------------------------------------------------ */

/* Under w->lock, on the loop thread: send one mark script for the runs of
 * `marks` (n of them): hiredis copies the arguments at once, and a run's
 * end, which clears its task under the lock before its result is sent
 * through this loop, is sent after its mark. Returns whether it was sent
 * (not while the connection is down, nor out of memory). */
static bool send_marks(ct__bworker_t *w, job_t **marks, int n) {
  const char **argv = calloc(3 + 3 * (size_t)n, sizeof *argv);
  char **keys = calloc((size_t)n, sizeof *keys);
  char nkeys[16];
  bool ok = argv && keys;
  for (int i = 0; ok && i < n; i++)
    ok = (keys[i] = ct__broker_key(w->b, "task:", marks[i]->msg.id)) != NULL;
  if (ok) {
    snprintf(nkeys, sizeof nkeys, "%d", n);
    argv[0] = "EVAL";
    argv[1] = mark_script;
    argv[2] = nkeys;
    for (int i = 0; i < n; i++) {
      argv[3 + i] = keys[i];
      argv[3 + n + 2 * i] = marks[i]->runs;
      argv[4 + n + 2 * i] = marks[i]->run_since_ms;
    }
    ok = ct__rconn_loop_send(w->b->conn, 3 + 3 * n, argv, NULL, NULL, NULL) == 0;
  }
  for (int i = 0; keys && i < n; i++)
    free(keys[i]);
  free(keys);
  free(argv);
  return ok;
}

/* On the loop thread: mark RUNNING the records of the runs that have
 * lasted MARK_AFTER, then arm the timer for the next run that may (a job
 * whose handler has not started yet is looked at again MARK_AFTER later).
 * With none to watch it keeps ticking every MARK_AFTER for MARK_IDLE_KEEP,
 * then stays unarmed until a run starts: arming it from the run's thread
 * costs a wake of this loop, which at every run start of a worker that
 * keeps falling idle put about 4 us more CPU on a task (bench-broker, one
 * submission per call, 3 alternated runs). */
static void mark_check(ct__bworker_t *w, struct ev_loop *ev) {
  double now = ct_now(), next = 0;
  pthread_mutex_lock(&w->lock);
  job_t **marks = calloc((size_t)w->running + 1, sizeof *marks);
  int n = 0;
  for (job_t *j = w->running_jobs; j; j = j->next) {
    bool running = j->run_since > 0 && j->task, waiting = j->run_since == 0;
    double at = running ? j->run_since + MARK_AFTER : now + MARK_AFTER;
    if (j->marked || !(running || waiting))
      continue;
    if (running && at <= now && marks && n < w->running) {
      j->marked = true;
      marks[n++] = j;
    } else if (next == 0 || at < next) {
      next = at;
    }
  }
  if (n > 0 && !send_marks(w, marks, n)) {
    for (int i = 0; i < n; i++) /* the next tick tries again */
      marks[i]->marked = false;
    next = next == 0 || now + MARK_AFTER < next ? now + MARK_AFTER : next;
  }
  if (next == 0) {
    if (w->mark_idle_since == 0)
      w->mark_idle_since = now;
    if (now - w->mark_idle_since < MARK_IDLE_KEEP)
      next = now + MARK_AFTER;
  } else {
    w->mark_idle_since = 0;
  }
  w->mark_armed = next > 0;
  pthread_mutex_unlock(&w->lock);
  free(marks);
  timer_rearm(ev, &w->mark, next, now);
}

static void on_mark(struct ev_loop *ev, ev_timer *t, int revents) {
  (void)revents;
  mark_check(t->data, ev);
}

/* Posted by a run that starts while the mark timer is unarmed. */
static void mark_arm(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  mark_check(data, ev);
}

/* --- running a task ----------------------------------------------------- */

/* The handler's result as JSON text; a result jansson cannot write becomes
 * a NotSerializable error (*result is then replaced). */
static char *result_text(json_t **result) {
  char *text = json_dumps(*result ? *result : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
  if (text)
    return text;
  json_decref(*result);
  *result = ct_error_new("NotSerializable", "Task result is not serializable");
  return *result ? json_dumps(*result, JSON_COMPACT) : NULL;
}

/* Drop one of a job's holds (its supervisor task's, its result's being
 * stored); the last frees its slot and the job. */
static void job_release(job_t *j) {
  ct__bworker_t *w = j->w;
  pthread_mutex_lock(&w->lock);
  bool last = --j->holds == 0;
  if (last) {
    if (j->prev)
      j->prev->next = j->next;
    else
      w->running_jobs = j->next;
    if (j->next)
      j->next->prev = j->prev;
    w->running--;
    pthread_cond_broadcast(&w->cond);
  }
  pthread_mutex_unlock(&w->lock);
  if (!last)
    return;
  ct__bmsg_clear(&j->msg);
  free(j);
}

/* The worker fetches nothing more from now. Lock held. */
static void begin_stopping(ct__bworker_t *w) {
  if (!w->stopping)
    w->unwritten_at_stop = w->unwritten;
  w->stopping = true;
}

/* A run ended whose outcome Redis did not take: a stop says so. */
static void count_unwritten(ct__bworker_t *w) {
  pthread_mutex_lock(&w->lock);
  w->unwritten++;
  pthread_mutex_unlock(&w->lock);
}

/* On the store thread: the job's result is stored (or could not be: its
 * entry stays pending, for its lease to pass). Its run has ended. */
static void stored(ct__bstore_req_t *req, int rc) {
  job_t *j = (job_t *)((char *)req - offsetof(job_t, req));
  ct__bworker_t *w = j->w;
  if (rc != 0) {
    ct__broker_log(w->b, CT_LOG_ERROR, "task %s: result not stored (%s): its entry stays pending",
                   j->msg.id, ct_strerror(rc));
    if (rc != CT_ESHUTDOWN) /* not a run the supervisor's stop gave up */
      count_unwritten(w);
  }
  ct__bmetrics_end(w->b, &j->msg, j->level, j->outcome, j->started);
  free(j->rec_key);
  free(j->done_key);
  free(j->text);
  j->rec_key = j->done_key = j->text = NULL;
  job_release(j);
}

/* Hand the result (text, taken) to the store thread, which stores it and
 * then acknowledges and deletes the entry (with other results finishing at
 * the same time: store.c), and return at once: the job keeps its slot, and
 * its lease is renewed, until the store is done. */
static void store(ct__bworker_t *w, job_t *j, const char *status, char *text,
                  ct_broker_status_t outcome) {
  bool ran = outcome != CT_BROKER_EXPIRED; /* an expired task never ran */
  j->outcome = outcome;
  j->text = text;
  j->rec_key = ct__broker_key(w->b, "task:", j->msg.id);
  j->done_key = ct__broker_key(w->b, "done:", j->msg.id);
  snprintf(j->finished, sizeof j->finished, "%lld", (long long)ct__broker_unix_ms());
  j->req = (ct__bstore_req_t){
      .keys = {j->rec_key, w->streams[j->level], j->done_key},
      .args = {j->entry, status, text, j->finished, j->msg.name,
               j->msg.deadline_ms != 0 ? "1" : "0", ran ? j->runs : "",
               ran ? j->run_since_ms : ""},
      .done = stored};
  pthread_mutex_lock(&w->lock);
  j->holds++;
  pthread_mutex_unlock(&w->lock);
  if (j->rec_key && j->done_key && text)
    ct__bstore_put(&w->store, &j->req);
  else
    stored(&j->req, CT_ENOMEM);
}

/* Seconds before retry number `attempt` (1 for the first): the base
 * doubled for each earlier retry, capped, then a random 50-100 % of it, so
 * that tasks failed together do not come back together. */
static double backoff_for(const ct__bmsg_t *m, long long attempt) {
  double base = m->backoff_ms ? (double)m->backoff_ms / 1000 : DEFAULT_BACKOFF;
  double cap = m->backoff_max_ms ? (double)m->backoff_max_ms / 1000 : DEFAULT_BACKOFF_MAX;
  double pause = fmin(cap, base * pow(2, (double)(attempt > 60 ? 60 : attempt - 1)));
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
    r = (uint32_t)ct__broker_unix_ms() * 2654435761u; /* any spread will do */
  return pause * (0.5 + 0.5 * ((double)r / 4294967295.0));
}

/* Whether a command's error says the server did not answer it. */
static bool unanswered(int rc) { return rc == CT_ETIMEDOUT || rc == CT_ESHUTDOWN; }

/* Put a failed run's task back, due after its backoff (now for a Retry
 * outcome), rather than store its error. Returns 0; CT_ETIMEDOUT or
 * CT_ESHUTDOWN if the server did not answer (logged: the entry stays
 * pending, and its take-over runs it again: the script may have run, which
 * took the entry, or not; storing the error made a failure final with runs
 * left, and, had the script run, the task ran again after it); or another
 * error (logged), after which the caller stores the error instead. */
static int retry(ct__bworker_t *w, const job_t *j, long long attempt, bool now,
                 const char *text, bool *lost) {
  int64_t now_ms = ct__broker_unix_ms();
  int64_t due = now_ms + (now ? 0 : (int64_t)ceil(backoff_for(&j->msg, attempt) * 1000));
  char *rec = ct__broker_key(w->b, "task:", j->msg.id);
  char due_s[24], now_s[24], next_run[24];
  snprintf(due_s, sizeof due_s, "%lld", (long long)due);
  snprintf(now_s, sizeof now_s, "%lld", (long long)now_ms);
  snprintf(next_run, sizeof next_run, "%lld", attempt + 1);
  const char *keys[] = {rec, w->streams[j->level], w->delayed, w->wake};
  const char *args[] = {j->entry, CT__BGROUP,  text,    due_s,    ct__blevel_names[j->level],
                        now_s,    DEFAULT_TTL, j->runs, next_run, j->run_since_ms,
                        w->consumer};
  long long written = 0;
  int rc = rec && text ? CT_ETIMEDOUT : CT_ENOMEM;
  for (int i = 0; i < STORE_TRIES && rc == CT_ETIMEDOUT; i++)
    rc = eval(w->b->conn, &retry_lua, 4, keys, 11, args, int_reply, &written);
  *lost = rc == 0 && written == 0;
  if (rc != 0)
    ct__broker_log(w->b, CT_LOG_ERROR, "task %s: cannot retry it (%s): %s", j->msg.id,
                   ct_strerror(rc), unanswered(rc) ? "its entry stays pending, to run again"
                                                   : "its error is stored");
  free(rec);
  return rc;
}

/* Whether a failed run is tried again: not a Reject, and runs are left
 * after this one (its number travels with the entry: a retry's entry says
 * which run it is for). */
static bool retried(const job_t *j, const json_t *result, long long attempt) {
  const char *cls = ct_result_error_class(result);
  long long max = j->msg.max_attempts > 0 ? j->msg.max_attempts : 1;
  return ct_result_is_error(result) && !(cls && strcmp(cls, CT_BROKER_REJECT) == 0) &&
         attempt > 0 && attempt < max;
}

/* Run the handler, watched: its run deadline (if any) is armed on the loop
 * thread, and lease loss or timeout set its cancel flag from there. */
static json_t *run_handler(ct__bworker_t *w, job_t *j, ct_task_t *self, bool *lost) {
  double now = j->started; /* run_task()'s, just read on this thread */
  char now_ms[24];
  snprintf(now_ms, sizeof now_ms, "%lld", (long long)ct__broker_unix_ms());
  pthread_mutex_lock(&w->lock);
  j->task = self;
  j->run_deadline = j->msg.timeout_ms ? now + (double)j->msg.timeout_ms / 1000 : 0;
  j->run_since = now;
  memcpy(j->run_since_ms, now_ms, sizeof now_ms);
  bool arm = !w->mark_armed;
  w->mark_armed = true;
  pthread_mutex_unlock(&w->lock);
  if (j->run_deadline > 0)
    ct_loop_call(ct__rconn_loop(w->b->conn), watch_arm, w);
  if (arm && ct_loop_call(ct__rconn_loop(w->b->conn), mark_arm, w) != 0) {
    pthread_mutex_lock(&w->lock); /* the next run to start tries again */
    w->mark_armed = false;
    pthread_mutex_unlock(&w->lock);
  }
  json_t *result = j->h ? j->h->fn(self, j->msg.kwargs, j->h->data)
                        : ct_error_new("UnknownTask", "no handler for %s", j->msg.name);
  pthread_mutex_lock(&w->lock);
  j->task = NULL;
  j->run_deadline = 0;
  bool timed_out = j->timed_out;
  *lost = j->lost;
  pthread_mutex_unlock(&w->lock);
  if (timed_out) { /* what it returned after its time is not its result */
    json_decref(result);
    result = ct_error_new("TimeoutError", "a run of %s took over %.3f s", j->msg.name,
                          (double)j->msg.timeout_ms / 1000);
  }
  return result;
}

/* One run: its outcome is stored (the store thread ends the run), or, for
 * a retry or a lost lease, the run ends here. */
static json_t *run_job(ct_task_t *self, job_t *j) {
  ct__bworker_t *w = j->w;
  if (j->msg.deadline_ms && ct__broker_unix_ms() > j->msg.deadline_ms) {
    json_t *result = ct_error_new("TimeoutError",
                                  "the caller's deadline passed before %s started", j->msg.name);
    store(w, j, "expired", result_text(&result), CT_BROKER_EXPIRED);
    return result;
  }
  long long attempt = j->attempts;
  bool lost = false;
  json_t *result = run_handler(w, j, self, &lost);
  if (lost) { /* its new owner runs it; nothing of this run is stored */
    ct__broker_log(w->b, CT_LOG_WARNING, "task %s: its lease was lost while it ran: "
                   "its result is dropped", j->msg.id);
    ct__bmetrics_end(w->b, &j->msg, j->level, CT_BROKER_RUNNING, j->started);
    return result;
  }
  char *text = result_text(&result);
  const char *cls = ct_result_error_class(result);
  bool now = cls && strcmp(cls, CT_BROKER_RETRY) == 0;
  bool retry_it = retried(j, result, attempt);
  int retry_rc = retry_it ? retry(w, j, attempt, now, text, &lost) : 0;
  if (retry_it && unanswered(retry_rc)) { /* nothing of this run is stored (retry()) */
    free(text);
    if (retry_rc == CT_ETIMEDOUT)
      count_unwritten(w);
    ct__bmetrics_end(w->b, &j->msg, j->level, CT_BROKER_RUNNING, j->started);
    return result;
  }
  if (retry_it && retry_rc == 0) {
    free(text);
    if (lost)
      ct__broker_log(w->b, CT_LOG_WARNING, "task %s: its lease was lost while it ran: "
                     "its failure is not retried here", j->msg.id);
    ct__bmetrics_end(w->b, &j->msg, j->level, lost ? CT_BROKER_RUNNING : CT_BROKER_RETRYING,
                     j->started);
    return result;
  }
  bool failed = ct_result_is_error(result);
  store(w, j, failed ? "failed" : "completed", text,
        failed ? CT_BROKER_FAILED : CT_BROKER_COMPLETED);
  return result;
}

static json_t *run_task(ct_task_t *self, void *arg) {
  job_t *j = arg;
  j->started = ct__bmetrics_start(j->w->b, &j->msg, j->level);
  return run_job(self, j);
}

/* Runs exactly once per task, ran or canceled: unless its result is
 * still being stored, the slot is free again. */
static void task_done(ct_task_t *task, void *data) {
  (void)task;
  job_release(data);
}

/* Hand one job to the supervisor. Returns 0, or its error (the job is then
 * freed and its entry stays pending). */
static int start_job(ct__bworker_t *w, job_t *j) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.name = j->msg.name;
  o.priority = level_priority[j->level];
  o.on_done = task_done;
  o.done_data = j;
  pthread_mutex_lock(&w->lock);
  w->running++;
  j->holds = 1;
  j->prev = NULL;
  j->next = w->running_jobs;
  if (j->next)
    j->next->prev = j;
  w->running_jobs = j;
  pthread_mutex_unlock(&w->lock);
  int rc = ct_background_task(w->b->sup, run_task, j, &o, NULL);
  if (rc != 0) {
    ct__broker_log(w->b, CT_LOG_ERROR, "task %s: the supervisor refused it (%s)", j->msg.id,
                   ct_strerror(rc));
    task_done(NULL, j);
  }
  return rc;
}

/* --- delayed tasks ------------------------------------------------------ */

/* What a ZRANGEBYSCORE of due members returned: copies, owned. */
typedef struct {
  char *members[PROMOTE_BATCH];
  size_t n;
} due_t;

static int due_reply(const redisReply *r, void *data) {
  due_t *d = data;
  if (r->type != REDIS_REPLY_ARRAY)
    return CT_EINVAL;
  for (size_t i = 0; i < r->elements && d->n < PROMOTE_BATCH; i++) {
    if (r->element[i]->type != REDIS_REPLY_STRING)
      continue;
    d->members[d->n] = strndup(r->element[i]->str, r->element[i]->len);
    if (!d->members[d->n])
      return CT_ENOMEM;
    d->n++;
  }
  return 0;
}

/* The level of a delayed-set member's array, or -1. */
static int member_level(const json_t *a) {
  const char *level = json_string_value(json_array_get(a, 0));
  for (int i = 0; level && i < CT__BLEVELS; i++)
    if (strcmp(level, ct__blevel_names[i]) == 0)
      return i;
  return -1;
}

/* The task id among a member's fields (after the level), or NULL. */
static const char *member_id(const json_t *a) {
  for (size_t i = 1; i + 1 < json_array_size(a); i += 2) {
    const char *k = json_string_value(json_array_get(a, i));
    const char *v = json_string_value(json_array_get(a, i + 1));
    if (k && v && strcmp(k, "id") == 0)
      return ct__bmsg_id_ok(v, strlen(v)) ? v : NULL;
  }
  return NULL;
}

/* The level and task id a delayed-set member names; NULL, or why it is not
 * a member as ctasker writes them (a static string). */
static const char *member_parts(const char *member, int *level, char *id) {
  json_t *a = json_loads(member, JSON_REJECT_DUPLICATES, NULL);
  const char *why = NULL;
  const char *tid = NULL;
  bool strings = json_is_array(a);
  for (size_t i = 0; strings && i < json_array_size(a); i++)
    strings = json_is_string(json_array_get(a, i));
  if (!strings || json_array_size(a) % 2 == 0)
    why = "not an array of a level and fields";
  else if ((*level = member_level(a)) < 0)
    why = "unknown level";
  else if (!(tid = member_id(a)))
    why = "missing or bad id";
  else
    memcpy(id, tid, CT_BROKER_ID_SIZE);
  json_decref(a);
  return why;
}

/* Move one due member into its stream (or, if it is not one, to the dead
 * letters). */
static int promote_one(ct__bworker_t *w, const char *member) {
  int level = 0;
  char id[CT_BROKER_ID_SIZE];
  const char *why = member_parts(member, &level, id);
  if (why) {
    ct__broker_log(w->b, CT_LOG_ERROR, "a delayed task is malformed (%s): dead letter", why);
    const char *keys[] = {w->delayed, w->dead};
    const char *args[] = {member, why};
    long long moved = 0;
    int rc = eval(w->fetch, &bury_member_lua, 2, keys, 2, args, int_reply, &moved);
    if (rc == 0 && moved == 1)
      ct__bmetrics_dead(w->b, "", "", -1);
    return rc;
  }
  char *rec = ct__broker_key(w->b, "task:", id);
  const char *keys[] = {w->delayed, w->streams[level], rec, w->dead};
  const char *args[] = {member};
  long long moved = 0;
  int rc = rec ? eval(w->fetch, &promote_lua, 4, keys, 1, args, int_reply, &moved) : CT_ENOMEM;
  free(rec);
  if (rc == 0 && moved == 2) {
    ct__broker_log(w->b, CT_LOG_ERROR, "delayed task %s cannot go back into its stream (too "
                   "many fields, or its record is not a hash): dead letter", id);
    ct__bmetrics_dead(w->b, "", id, -1);
  }
  return rc;
}

/* Move the delayed tasks that are due into their streams, a batch at a
 * time: any worker may, and the script makes sure only one does for each. */
static int promote_due(ct__bworker_t *w) {
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)ct__broker_unix_ms());
  const char *argv[] = {"ZRANGEBYSCORE", w->delayed, "-inf", now, "LIMIT", "0",
                        PROMOTE_BATCH_S};
  due_t d = {.n = 0};
  int rc = ct__rconn_command(w->fetch, 7, argv, NULL, due_reply, &d);
  for (size_t i = 0; i < d.n; i++) {
    if (rc == 0)
      rc = promote_one(w, d.members[i]);
    free(d.members[i]);
  }
  return rc;
}

/* --- the fetch thread --------------------------------------------------- */

/* `seconds` from now on CLOCK_REALTIME, w->cond's clock. */
static struct timespec realtime_after(double seconds) {
  struct timespec at;
  clock_gettime(CLOCK_REALTIME, &at);
  at.tv_sec += (time_t)seconds;
  at.tv_nsec += (long)((seconds - floor(seconds)) * 1e9);
  if (at.tv_nsec >= 1000000000) {
    at.tv_sec++;
    at.tv_nsec -= 1000000000;
  }
  return at;
}

/* Wait until a slot is free; returns how many, or 0 once stopping. Counts
 * of runs that ended meanwhile are written at least once a second while
 * it waits: runs that hold every slot for long held them back as long. */
static int wait_for_slot(ct__bworker_t *w) {
  pthread_mutex_lock(&w->lock);
  while (!w->stopping && w->running >= w->concurrency) {
    struct timespec at = realtime_after(1.0);
    if (pthread_cond_timedwait(&w->cond, &w->lock, &at) == ETIMEDOUT) {
      pthread_mutex_unlock(&w->lock);
      ct__bmetrics_due(w->b);
      pthread_mutex_lock(&w->lock);
    }
  }
  int free_slots = w->stopping ? 0 : w->concurrency - w->running;
  pthread_mutex_unlock(&w->lock);
  return free_slots;
}

/* The slots free now (0 if stopping), without waiting for one. */
static int slots_free(ct__bworker_t *w) {
  pthread_mutex_lock(&w->lock);
  int free_slots = w->stopping ? 0 : w->concurrency - w->running;
  pthread_mutex_unlock(&w->lock);
  return free_slots;
}

/* Pause after an error, for at most `seconds`, or until a stop. Returns
 * false if the worker is stopping. */
static bool pause_for(ct__bworker_t *w, double seconds) {
  struct timespec until = realtime_after(seconds);
  pthread_mutex_lock(&w->lock);
  while (!w->stopping && pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
    ;
  bool stopping = w->stopping;
  pthread_mutex_unlock(&w->lock);
  return !stopping;
}

/* Publish the fetch connection's client id (the connection learns it as
 * it connects: no round trip per wait), so that a stop can end the
 * blocking read at once. Returns false if stopping already. */
static bool publish_blocked_id(ct__bworker_t *w) {
  long long id = ct__rconn_client_id(w->fetch);
  pthread_mutex_lock(&w->lock);
  w->blocked_id = id;
  bool stopping = w->stopping;
  pthread_mutex_unlock(&w->lock);
  return !stopping;
}

/* The fetch script's keys and arguments (see fetch_script) for up to
 * `count` entries. */
typedef struct {
  const char *keys[CT__BLEVELS + 2];
  const char *args[6 + CT__BLEVELS];
  char count[16], lease[24], max[16];
} fetch_args_t;

static void fetch_args(ct__bworker_t *w, fetch_args_t *a, int count, bool takeover) {
  snprintf(a->count, sizeof a->count, "%d", count);
  snprintf(a->lease, sizeof a->lease, "%.0f", w->lease * 1000);
  snprintf(a->max, sizeof a->max, "%d", w->max_deliveries);
  const char *keys[] = {w->streams[0], w->streams[1], w->streams[2], w->streams[3],
                        w->delayed,    w->wake};
  const char *args[] = {CT__BGROUP,         w->consumer,       a->count,
                        a->lease,           a->max,            takeover ? "1" : "0",
                        w->takeover_from[0], w->takeover_from[1], w->takeover_from[2],
                        w->takeover_from[3]};
  memcpy(a->keys, keys, sizeof keys);
  memcpy(a->args, args, sizeof args);
}

/* Whether a fetch took any entry (started, refused or to bury). */
static bool fetch_took(const fetch_t *f) {
  return f->started > 0 || f->refused || f->jobs != NULL;
}

/* After a fetch: bury what it took to bury, unless the supervisor refused
 * a job (start_taken()) or `refused` already (the connection's loop has
 * ended: the supervisor stops). Returns how many jobs were started, or -1
 * after a refusal (fetch nothing more; what was not started stays
 * pending). */
static int start_fetched(ct__bworker_t *w, fetch_t *f, bool refused) {
  refused = refused || f->refused;
  while (f->jobs) {
    job_t *j = f->jobs;
    f->jobs = j->next;
    if (!refused)
      bury(w, j); /* only those to bury are left, unless refused */
    ct__bmsg_clear(&j->msg); /* after a refusal its entry stays pending */
    free(j);
  }
  if (refused) {
    pthread_mutex_lock(&w->lock);
    begin_stopping(w);
    pthread_mutex_unlock(&w->lock);
  }
  return refused ? -1 : f->started;
}

/* A fetch that returned more entries than asked for: say so (they stay
 * pending until their lease passes). */
static void log_over(ct__bworker_t *w, const fetch_t *f) {
  if (f->over > 0)
    ct__broker_log(w->b, CT_LOG_ERROR, "a fetch returned %d entries more than the %d asked "
                   "for: they stay pending until their lease passes", f->over, f->want);
}

enum {
  READ_ARGC = 6 + 2 * (CT__BLEVELS + 1),
  FETCH_ARGC = 3 + CT__BLEVELS + 2 + 6 + CT__BLEVELS
};

/* The blocking read (XREAD) of the streams and the wake stream past the
 * ids in f, for at most BLOCK_MS and no longer than until the earliest
 * delayed task is due, into argv; block holds its milliseconds. Returns
 * whether that due time cuts the block short. */
static bool read_argv(ct__bworker_t *w, const fetch_t *f, char block[24], const char **argv) {
  int64_t ms = f->due_ms > 0 ? f->due_ms - ct__broker_unix_ms() : 1000;
  snprintf(block, 24, "%lld", (long long)(ms < 1 ? 1 : ms < 1000 ? ms : 1000));
  const char *head[] = {"XREAD", "COUNT", "1", "BLOCK", block, "STREAMS"};
  memcpy(argv, head, sizeof head);
  for (int i = 0; i <= CT__BLEVELS; i++) {
    argv[6 + i] = i < CT__BLEVELS ? w->streams[i] : w->wake;
    argv[6 + CT__BLEVELS + 1 + i] = f->ids[i][0] ? f->ids[i] : "0-0";
  }
  return ms < 1000;
}

/* Block until a stream or the wake stream has an entry newer than the ids
 * in f, or until the earliest delayed task is due (at most BLOCK_MS, so
 * that a lost wake is made up for). Behind the blocking read, in the same
 * write, goes a fetch of up to `count` entries, the slots free (it runs
 * when the read returns), so that an idle worker
 * that is woken has its entries without another round trip (two thread
 * hand-offs and a wake of the server: about a third of an idle RPC's
 * time, measured); they are started here. No fetch goes behind a read
 * cut short by a delayed task's due time (the next round moves the due
 * tasks first). The fetch behind never takes over: a stop ends the read
 * with CLIENT UNBLOCK, after which that fetch still runs, and it must not
 * take over what the stop leaves to other workers (without a take-over it
 * finds only what a fetch in flight as the stop came would have found).
 * So a take-over that is due is the next round's, before any read.
 * Returns whether to block again at once, with f updated: that fetch took
 * fewer than asked and read every stream to its end, and neither a delayed
 * task nor a take-over is due. So each read is followed by one fetch. */
static bool wait_for_entries(ct__bworker_t *w, fetch_t *f, int count) {
  if (ct_now() >= w->next_takeover)
    return false;
  ct__bmetrics_idle(w->b);
  if (!publish_blocked_id(w))
    return false;
  char block[24];
  const char *argv[READ_ARGC];
  if (read_argv(w, f, block, argv))
    count = 0; /* no fetch behind the read */
  fetch_args_t a;
  fetch_args(w, &a, count, false);
  char sha[41];
  ct__bscript_kept_sha(&fetch_lua, sha); /* "" until a fetch has loaded it */
  const char *eval_argv[FETCH_ARGC] = {"EVALSHA", sha, "6"};
  memcpy(eval_argv + 3, a.keys, sizeof a.keys);
  memcpy(eval_argv + 3 + CT__BLEVELS + 2, a.args, sizeof a.args);
  fetch_t next = {.w = w, .want = count};
  ct__rconn_cmd_t cmds[] = {{READ_ARGC, argv, NULL, ok_reply, NULL, 0},
                            {FETCH_ARGC, eval_argv, NULL, fetch_reply, &next, 0}};
  size_t n = count > 0 && sha[0] ? 2 : 1;
  int rc = ct__rconn_pipeline(w->fetch, w->b->command_timeout + BLOCK_SECONDS, n, cmds);
  pthread_mutex_lock(&w->lock);
  w->blocked_id = 0;
  pthread_mutex_unlock(&w->lock);
  if (rc != 0 || cmds[0].rc != 0)
    pause_for(w, 0.5);
  if (n < 2)
    return false;
  /* A fetch that failed (NOSCRIPT, NOGROUP, the connection) is the next
   * round's to make again; what it took before it failed still runs. */
  bool ok = rc == 0 && cmds[1].rc == 0, took = fetch_took(&next);
  log_over(w, &next);
  int started = start_fetched(w, &next, rc == CT_ESHUTDOWN || cmds[1].rc == CT_ESHUTDOWN);
  if (!ok)
    return false;
  w->next_due_ms = next.due_ms;
  if (started < 0 || (took && !next.caught_up))
    return false;
  memcpy(f->ids, next.ids, sizeof f->ids);
  f->due_ms = next.due_ms;
  return !(next.due_ms > 0 && next.due_ms <= ct__broker_unix_ms());
}

/* After a fetch that took over: the pass goes on from where it stopped, or,
 * done, begins again from the start after min(lease / 3, 1 s). */
static void takeover_went_on(ct__bworker_t *w, const fetch_t *f) {
  for (int i = 0; i < CT__BLEVELS; i++)
    snprintf(w->takeover_from[i], sizeof w->takeover_from[i], "%s",
             f->more ? f->cursors[i] : "0-0");
  if (!f->more)
    w->next_takeover = ct_now() + fmin(w->lease / 3, TAKEOVER_EVERY_MAX);
}

/* One round: fetch up to free_slots entries and start them, or wait. */
static void fetch_round(ct__bworker_t *w, int free_slots) {
  bool takeover = ct_now() >= w->next_takeover;
  fetch_t f = {.w = w, .want = free_slots};
  int rc = w->next_due_ms < 0 || (w->next_due_ms > 0 && w->next_due_ms <= ct__broker_unix_ms())
               ? promote_due(w)
               : 0;
  if (rc != 0) { /* logged, and paused for: a due time past would not block */
    ct__broker_log(w->b, CT_LOG_ERROR, "moving due delayed tasks failed (%s)", ct_strerror(rc));
    if (!pause_for(w, 0.5))
      return; /* a fetch now would only wait for Redis */
  }
  fetch_args_t a;
  fetch_args(w, &a, free_slots, takeover);
  rc = eval(w->fetch, &fetch_lua, CT__BLEVELS + 2, a.keys, 6 + CT__BLEVELS, a.args,
            fetch_reply, &f);
  w->next_due_ms = rc == 0 ? f.due_ms : -1;
  if (rc == 0 && takeover)
    takeover_went_on(w, &f);
  log_over(w, &f);
  bool took = fetch_took(&f);
  int started = start_fetched(w, &f, rc == CT_ESHUTDOWN);
  if (started < 0) /* the supervisor is stopping or stopped: fetch nothing more */
    return;
  if (f.nogroup && create_groups(w) == 0 && publish_names(w) == 0)
    return;
  if (rc != 0) {
    ct__broker_log(w->b, CT_LOG_ERROR, "fetching tasks failed (%s)", ct_strerror(rc));
    pause_for(w, 0.5);
  } else if (!took || f.caught_up) { /* a fetch now would find nothing new */
    int count = free_slots - started;
    while (wait_for_entries(w, &f, count) && (count = slots_free(w)) > 0)
      ;
  }
}

static void *fetch_main(void *arg) {
  ct__bworker_t *w = arg;
  pthread_setname_np(pthread_self(), "ct-broker-fetch");
  for (int free_slots; (free_slots = wait_for_slot(w)) > 0;)
    fetch_round(w, free_slots);
  pthread_mutex_lock(&w->lock);
  w->fetch_done = true;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* --- liveness ----------------------------------------------------------- */

/* Arguments of the alive script; *json to free. NULL if out of memory. */
static bool alive_args(ct__bworker_t *w, const char **argv, char **json, char *ttl,
                       char *now) {
  char host[128] = "";
  gethostname(host, sizeof host - 1);
  pthread_mutex_lock(&w->lock);
  int in_flight = w->running;
  pthread_mutex_unlock(&w->lock);
  json_t *rec = json_pack("{s:s,s:i,s:O,s:i,s:i,s:f}", "host", host, "pid", (int)getpid(),
                          "names", w->names, "concurrency", w->concurrency, "in_flight",
                          in_flight, "lease", w->lease);
  *json = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
  json_decref(rec);
  if (!*json)
    return false;
  snprintf(ttl, 24, "%.0f", w->lease * 3000);
  snprintf(now, 24, "%lld", (long long)ct__broker_unix_ms());
  const char *a[] = {"EVAL", alive_script, "2", w->workers_key, w->alive_key, w->consumer,
                     *json, ttl, now};
  memcpy(argv, a, sizeof a);
  return true;
}

/* Refresh the liveness record now, without waiting (the loop thread). */
static void alive_tick(ct__bworker_t *w) {
  const char *argv[9];
  char *json, ttl[24], now[24];
  if (!alive_args(w, argv, &json, ttl, now))
    return; /* the next tick tries again */
  ct__rconn_loop_send(w->b->conn, 9, argv, NULL, NULL, NULL);
  free(json);
}

/* Write the liveness record, waiting for it (at start). */
static int alive_now(ct__bworker_t *w) {
  const char *argv[9];
  char *json, ttl[24], now[24];
  if (!alive_args(w, argv, &json, ttl, now))
    return CT_ENOMEM;
  int rc = ct__rconn_command(w->b->conn, 9, argv, NULL, ok_reply, NULL);
  free(json);
  return rc;
}

/* Remove the liveness record, both commands in one round trip. */
static void alive_remove(ct__bworker_t *w) {
  const char *del[] = {"DEL", w->alive_key};
  const char *zrem[] = {"ZREM", w->workers_key, w->consumer};
  ct__rconn_cmd_t cmds[] = {{2, del, NULL, ok_reply, NULL, 0}, {3, zrem, NULL, ok_reply, NULL, 0}};
  ct__rconn_pipeline(w->b->conn, w->b->command_timeout, 2, cmds);
}

/* --- leases ------------------------------------------------------------- */

/* A running task whose entry (of the stream of `level`) another worker has
 * taken over: it is asked to cancel (its cooperative flag), and what it
 * returns is not stored. */
static void lose(ct__bworker_t *w, int level, const char *entry) {
  ct__broker_log(w->b, CT_LOG_WARNING, "entry %s of %s: lease lost, another worker has taken "
                 "it over: its run is asked to cancel", entry, w->streams[level]);
  pthread_mutex_lock(&w->lock);
  for (job_t *j = w->running_jobs; j; j = j->next) {
    if (j->level != level || strcmp(j->entry, entry) != 0 || j->lost)
      continue;
    j->lost = true;
    if (j->task)
      ct_task_cancel(j->task); /* running: sets its cooperative flag */
  }
  pthread_mutex_unlock(&w->lock);
}

/* A renewal's reply: the entries of its stream another worker has taken
 * over. privdata is the worker's renewal_t of that stream; the worker
 * outlives its renewals: retiring it stops them on this thread, after the
 * replies of those sent (a connection that closes answers them NULL
 * first). */
static void on_renewed(redisAsyncContext *ac, void *reply, void *privdata) {
  (void)ac;
  const redisReply *r = reply;
  const renewal_t *renewal = privdata;
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return;
  for (size_t i = 0; i < r->elements; i++)
    if (r->element[i]->type == REDIS_REPLY_STRING)
      lose(renewal->w, renewal->level, r->element[i]->str);
}

/* Renew the leases of the running tasks of one stream: one script, sent
 * without waiting (this is the loop thread). Under w->lock: the ids belong
 * to running jobs, and hiredis copies them into its buffer at once. */
static void renew_level(ct__bworker_t *w, int level, const char **argv) {
  int argc = 0;
  argv[argc++] = "EVAL";
  argv[argc++] = renew_script;
  argv[argc++] = "1";
  argv[argc++] = w->streams[level];
  argv[argc++] = CT__BGROUP;
  argv[argc++] = w->consumer;
  int first = argc;
  for (const job_t *j = w->running_jobs; j; j = j->next)
    if (j->level == level)
      argv[argc++] = j->entry;
  if (argc > first)
    ct__rconn_loop_send(w->b->conn, argc, argv, NULL, on_renewed, &w->renewals[level]);
}

static void on_renew(struct ev_loop *ev, ev_timer *t, int revents) {
  (void)ev;
  (void)revents;
  ct__bworker_t *w = t->data;
  const char **argv = calloc(6 + (size_t)w->concurrency, sizeof *argv);
  if (!argv)
    return; /* the next tick tries again, well within the lease */
  pthread_mutex_lock(&w->lock);
  for (int level = 0; level < CT__BLEVELS; level++)
    renew_level(w, level, argv);
  pthread_mutex_unlock(&w->lock);
  free(argv);
  alive_tick(w);
}

static void renew_start(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ct__bworker_t *w = data;
  ev_timer_init(&w->renew, on_renew, w->lease / 3, w->lease / 3);
  w->renew.data = w;
  ev_timer_start(ev, &w->renew);
  ev_timer_init(&w->watch, on_watch, 0.0, 0.0);
  w->watch.data = w;
  ev_timer_init(&w->mark, on_mark, 0.0, 0.0);
  w->mark.data = w;
}

typedef struct {
  ct__bworker_t *w;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
} renew_stop_t;

static void renew_stop_on_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  renew_stop_t *s = data;
  ev_timer_stop(ev, &s->w->renew);
  ev_timer_stop(ev, &s->w->watch);
  ev_timer_stop(ev, &s->w->mark);
  pthread_mutex_lock(&s->lock);
  s->done = true;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->lock);
}

/* Stop the renewal timer and wait until it is stopped. A loop that has
 * ended (its supervisor stopped) refuses the call: its timers are gone. */
static void renew_stop(ct__bworker_t *w) {
  renew_stop_t s = {w, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  if (ct_loop_call(ct__rconn_loop(w->b->conn), renew_stop_on_loop, &s) == 0) {
    pthread_mutex_lock(&s.lock);
    while (!s.done)
      pthread_cond_wait(&s.cond, &s.lock);
    pthread_mutex_unlock(&s.lock);
  }
  pthread_cond_destroy(&s.cond);
  pthread_mutex_destroy(&s.lock);
}

/* --- life --------------------------------------------------------------- */

static char *default_consumer(void) {
  static atomic_uint serial;
  char host[128] = "host", *s = NULL;
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = '\0';
  if (asprintf(&s, "%s-%d-%u", host, (int)getpid(), atomic_fetch_add(&serial, 1)) < 0)
    return NULL;
  return s;
}

static void worker_destroy(ct__bworker_t *w) {
  ct__rconn_free(w->fetch);
  json_decref(w->names);
  free(w->workers_key);
  free(w->alive_key);
  for (int i = 0; i < CT__BLEVELS; i++)
    free(w->streams[i]);
  free(w->dead);
  free(w->delayed);
  free(w->wake);
  free(w->consumer);
  ct__bstore_destroy(&w->store);
  pthread_cond_destroy(&w->cond);
  pthread_mutex_destroy(&w->lock);
  free(w);
}

static ct__bworker_t *worker_new(ct_broker_t *b, const ct_broker_worker_opts_t *o) {
  ct__bworker_t *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  ct__bstore_init(&w->store, b->conn, b->command_timeout, CT__BGROUP, DEFAULT_TTL,
                  STORE_TRIES);
  w->next_due_ms = -1;
  for (int i = 0; i < CT__BLEVELS; i++)
    strcpy(w->takeover_from[i], "0-0");
  w->b = b;
  w->concurrency = o && o->concurrency > 0 ? o->concurrency : DEFAULT_CONCURRENCY;
  w->lease = o && o->lease > 0 ? o->lease : DEFAULT_LEASE;
  w->max_deliveries = o && o->max_deliveries > 0 ? o->max_deliveries : DEFAULT_MAX_DELIVERIES;
  w->consumer = o && o->consumer ? strdup(o->consumer) : default_consumer();
  w->dead = ct__broker_key(b, "dead", "");
  w->delayed = ct__broker_key(b, "delayed", "");
  w->wake = ct__broker_key(b, "wake", "");
  w->workers_key = ct__broker_key(b, "workers", "");
  w->alive_key = w->consumer ? ct__broker_key(b, "worker:", w->consumer) : NULL;
  w->names = json_array();
  bool ok = w->consumer && w->dead && w->delayed && w->wake && w->workers_key &&
            w->alive_key && w->names;
  for (const ct__bhandler_t *h = b->handlers; ok && h; h = h->next)
    ok = json_array_append_new(w->names, json_string(h->name)) == 0;
  for (int i = 0; i < CT__BLEVELS; i++) {
    ok = (w->streams[i] = ct__broker_key(b, "stream:", ct__blevel_names[i])) && ok;
    w->renewals[i] = (renewal_t){w, i};
  }
  if (!ok) {
    worker_destroy(w);
    return NULL;
  }
  return w;
}

static int policy_reply(const redisReply *r, void *data) {
  char *policy = data;
  if (r->type == REDIS_REPLY_ERROR) /* CONFIG disabled, as some services do */
    return CT_ENOTSUP;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[1]->type != REDIS_REPLY_STRING)
    return CT_EINVAL;
  snprintf(policy, 32, "%s", r->element[1]->str);
  return 0;
}

/* Refuse a server that may evict task data, unless allowed. */
static int check_eviction(ct__bworker_t *w, bool allow) {
  char policy[32] = "";
  const char *argv[] = {"CONFIG", "GET", "maxmemory-policy"};
  int rc = ct__rconn_command(w->b->conn, 3, argv, NULL, policy_reply, policy);
  if (rc == CT_ENOTSUP) {
    ct__broker_log(w->b, CT_LOG_WARNING, "cannot read maxmemory-policy: make sure it is "
                   "noeviction, or tasks and results may be lost");
    return 0;
  }
  if (rc != 0 || allow || strcmp(policy, "noeviction") == 0)
    return rc;
  ct__broker_log(w->b, CT_LOG_ERROR, "maxmemory-policy is %s, which may evict tasks and "
                 "results: set it to noeviction (or allow eviction)", policy);
  return CT_ENOTSUP;
}

/* Connect, publish the names, make the groups, start the fetch thread. */
static int worker_begin(ct__bworker_t *w, bool allow_eviction) {
  ct_broker_t *b = w->b;
  ct__rconn_opts_t co = {b->sup, &b->url, b->connect_timeout,
                         b->command_timeout + BLOCK_SECONDS, b->log, b->log_data};
  int rc = check_eviction(w, allow_eviction);
  if (rc == 0)
    rc = ct__rconn_new(&co, &w->fetch);
  if (rc == 0)
    rc = publish_names(w);
  if (rc == 0)
    rc = create_groups(w);
  if (rc == 0) {
    w->alive_written = true; /* maybe, even if the reply does not come */
    rc = alive_now(w);
  }
  if (rc == 0)
    rc = ct_loop_call(ct__rconn_loop(b->conn), renew_start, w);
  if (rc != 0)
    return rc;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the threads start with signals blocked */
  rc = ct__bstore_start(&w->store);
  if (rc == 0)
    rc = pthread_create(&w->thread, NULL, fetch_main, w) == 0 ? 0 : CT_EAGAIN;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

/* Each bad field is logged through the broker's log. */
static int check_worker_opts(const ct_broker_t *b, const ct_broker_worker_opts_t *o) {
  ct__opts_check_t c = {"ct_broker_worker_opts_t", "ct_broker_worker_start", b->log,
                        b->log_data, 0};
  if (!o)
    return 0;
  if (o->size != sizeof *o)
    return ct__opts_bad(&c, "size", "%zu is not a size this library knows (%zu)", o->size,
                        sizeof *o);
  ct__opts_int(&c, "concurrency", o->concurrency, 0, INT_MAX);
  ct__opts_int(&c, "max_deliveries", o->max_deliveries, 0, INT_MAX);
  if (isnan(o->lease) || (o->lease != 0 && !(o->lease >= MIN_LEASE && o->lease <= 86400)))
    ct__opts_bad(&c, "lease", "%g seconds: 0 (the default) or from %g to 86400", o->lease,
                 MIN_LEASE);
  if (o->consumer && !ct__bmsg_name_ok(o->consumer, strlen(o->consumer)))
    ct__opts_bad(&c, "consumer", "\"%s\" is not a valid name", o->consumer);
  return c.rc;
}

int ct_broker_worker_start(ct_broker_t *b, const ct_broker_worker_opts_t *opts) {
  if (!b || check_worker_opts(b, opts) != 0)
    return CT_EINVAL;
  ct__bworker_t *w = worker_new(b, opts);
  if (!w)
    return CT_ENOMEM;
  pthread_mutex_lock(&b->lock);
  int rc = b->worker ? CT_EBUSY : b->handlers ? 0 : CT_EINVAL;
  if (rc == 0)
    b->worker = w; /* closes registration */
  pthread_mutex_unlock(&b->lock);
  if (rc == 0)
    rc = worker_begin(w, opts && opts->allow_eviction);
  if (rc != 0) {
    pthread_mutex_lock(&b->lock);
    if (b->worker == w)
      b->worker = NULL;
    pthread_mutex_unlock(&b->lock);
    renew_stop(w); /* harmless if it never started */
    if (w->alive_written) /* a worker that never ran is not listed as live */
      alive_remove(w);
    worker_destroy(w);
  }
  return rc;
}

/* Stop fetching and wait (as ct_broker_worker_stop) for the running tasks. */
/* A retired worker's last writes: its liveness record goes, its last
 * counts are added. Not while Redis is unreachable: each write would wait
 * its command timeout, one after the other, and a stop that should take
 * moments took a quarter of a minute; the record expires by itself. */
static void retire_in_redis(ct__bworker_t *w) {
  if (!ct__rconn_up(w->b->conn)) {
    ct__broker_log(w->b, CT_LOG_WARNING, "stopped while Redis is unreachable: the worker's "
                   "liveness record is left to expire, its last counts are not written");
    return;
  }
  alive_remove(w);
  ct__bmetrics_final(w->b);
}

static int worker_stop(ct__bworker_t *w, double timeout) {
  bool bounded = timeout > 0 && timeout < 1e9;
  struct timespec until = realtime_after(bounded ? timeout : 0);
  pthread_mutex_lock(&w->lock);
  begin_stopping(w);
  pthread_cond_broadcast(&w->cond);
  long long blocked = w->blocked_id;
  pthread_mutex_unlock(&w->lock);
  if (blocked) { /* end the fetch thread's blocking read now */
    char id[24];
    snprintf(id, sizeof id, "%lld", blocked);
    const char *argv[] = {"CLIENT", "UNBLOCK", id};
    ct__rconn_command(w->b->conn, 3, argv, NULL, ok_reply, NULL);
  }
  pthread_mutex_lock(&w->lock);
  int rc = 0;
  while (timeout != 0 && (w->running > 0 || !w->fetch_done) && rc == 0)
    rc = bounded ? pthread_cond_timedwait(&w->cond, &w->lock, &until)
                 : pthread_cond_wait(&w->cond, &w->lock);
  rc = w->running > 0 || !w->fetch_done ? CT_ETIMEDOUT : 0;
  bool retire = rc == 0 && !w->retired;
  w->retired = w->retired || retire;
  if (rc == 0 && w->unwritten > w->unwritten_at_stop)
    rc = CT_EAGAIN;
  pthread_mutex_unlock(&w->lock);
  if (retire) { /* once: nothing runs any more */
    renew_stop(w);
    retire_in_redis(w);
  }
  return timeout == 0 ? 0 : rc;
}

int ct_broker_worker_stop(ct_broker_t *b, double timeout) {
  if (!b || isnan(timeout))
    return CT_EINVAL;
  pthread_mutex_lock(&b->lock);
  ct__bworker_t *w = b->worker;
  pthread_mutex_unlock(&b->lock);
  return w ? worker_stop(w, timeout) : CT_EINVAL;
}

void ct__bworker_free(ct__bworker_t *w) {
  if (!w)
    return;
  worker_stop(w, -1); /* retires it */
  pthread_join(w->thread, NULL);
  worker_destroy(w);
}
