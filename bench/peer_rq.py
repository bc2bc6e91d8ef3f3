"""bench-broker's RQ peer: the same empty task end to end on the same Redis,
one worker process of RQ's SimpleWorker class (it runs jobs in its own
process; RQ's default Worker forks a child per job), otherwise RQ's
defaults. RQ has no blocking wait for a result, so an RPC polls the job's
status every millisecond, as RQ's documentation has users do. Usage and
output: see peer_common.py. `python3 peer_rq.py --worker SOCKET` is the
worker.
"""
import os
import subprocess
import sys
import time

import peer_common as pc

try:
    import redis
    import rq
    from rq.registry import FinishedJobRegistry
except ImportError as e:
    pc.missing("RQ", e)


def empty():
    return None


def worker(sock):
    conn = redis.Redis(unix_socket_path=sock)
    rq.SimpleWorker([rq.Queue("bench", connection=conn)], connection=conn).work(
        logging_level="WARNING")


def call(q):
    job = q.enqueue("peer_rq.empty")
    while job.get_status(refresh=True) not in ("finished", "failed"):
        time.sleep(0.001)


def main():
    sock, tasks, producers, rpc = pc.args()
    here = os.path.dirname(os.path.abspath(__file__))
    w = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", sock], cwd=here,
                         env=dict(os.environ, PYTHONPATH=here), stdout=subprocess.DEVNULL,
                         stderr=pc.worker_stderr())
    try:
        conn = redis.Redis(unix_socket_path=sock)
        q = rq.Queue("bench", connection=conn)
        call(q)  # the worker is up
        finished = FinishedJobRegistry("bench", connection=conn)
        base = conn.zcard(finished.key)
        r0, p0, w0, t0 = pc.redis_cpu(conn), pc.own_cpu(), pc.proc_cpu(w.pid), time.monotonic()
        pc.produce(lambda: q.enqueue("peer_rq.empty"), tasks, producers)
        done = pc.wait_until(lambda: conn.zcard(finished.key) - base, tasks)
        t1, r1, p1, w1 = time.monotonic(), pc.redis_cpu(conn), pc.own_cpu(), pc.proc_cpu(w.pid)
        completed = conn.zcard(finished.key) - base
        rpc_us = pc.round_trips_us(lambda: call(q), rpc)
        pc.report("RQ", rq.__version__, tasks, t1 - t0, r1 - r0, p1 - p0, w1 - w0, completed,
                  rpc_us, "SimpleWorker, one process; RPC: enqueue, then poll every 1 ms"
                  + ("" if done else "; timed out waiting for the results"))
    finally:
        pc.stop(w)


if __name__ == "__main__":
    worker(sys.argv[2]) if sys.argv[1] == "--worker" else main()
