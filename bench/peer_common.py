"""What bench-broker's Python peers share: the command line, CPU readings
of Redis (INFO cpu), of this process and of the worker process, waiting
for a count to reach a target, and the one JSON line each peer prints.

A peer script is run as `python3 peer_X.py SOCKET TASKS PRODUCERS RPC`:
it starts its own worker process on the Redis server at the Unix socket
SOCKET (its database 0 empty, the result backend in database 1), runs
TASKS empty tasks end to end from PRODUCERS threads, then RPC calls one at
a time, stops the worker and prints one JSON object. If its library is not
installed it prints {"peer": NAME, "missing": REASON} and exits 0, so that
the benchmark can say so instead of failing.
"""
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def args():
    sock, tasks, producers, rpc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    return sock, tasks, producers, rpc


def missing(name, err):
    print(json.dumps({"peer": name, "missing": str(err)}))
    sys.exit(0)


def worker_stderr():
    """Where a peer's worker writes its warnings: nowhere, unless CT_BENCH_VERBOSE is set."""
    return None if os.environ.get("CT_BENCH_VERBOSE") else subprocess.DEVNULL


def redis_cpu(client):
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def own_cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid):
    """CPU seconds (user + system) of process pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_until(count, target, bound=600.0, pause=0.002):
    """Poll count() until it reaches target; False if `bound` s passed."""
    end = time.monotonic() + bound
    while count() < target:
        if time.monotonic() > end:
            return False
        time.sleep(pause)
    return True


def produce(submit, tasks, producers):
    """Submit `tasks` tasks from `producers` threads; returns when all are submitted."""
    share = [tasks // producers + (1 if i < tasks % producers else 0) for i in range(producers)]
    threads = [threading.Thread(target=lambda n=n: [submit() for _ in range(n)]) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def quantile(sorted_values, q):
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def round_trips_us(call, n):
    """Microseconds of each of n calls of call(), one at a time."""
    times = []
    for _ in range(n):
        s = time.monotonic()
        call()
        times.append((time.monotonic() - s) * 1e6)
    return times


def stop(worker):
    """End the worker process: politely, then by force after 10 s."""
    worker.terminate()
    try:
        worker.wait(10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def report(name, version, tasks, seconds, redis_s, producer_s, worker_s, completed, rpc_us, note):
    rpc_us.sort()
    print(json.dumps({
        "peer": name, "version": version, "tasks": tasks, "completed": completed,
        "seconds": seconds, "tasks_per_s": tasks / seconds if seconds > 0 else None,
        "redis_cpu_us_per_task": redis_s * 1e6 / tasks,
        "producer_cpu_us_per_task": producer_s * 1e6 / tasks,
        "worker_cpu_us_per_task": worker_s * 1e6 / tasks,
        "rpc_calls": len(rpc_us), "rpc_p50_us": quantile(rpc_us, 0.50),
        "rpc_p99_us": quantile(rpc_us, 0.99), "note": note}))
