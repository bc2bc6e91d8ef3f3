"""bench-broker's Celery peer: the same empty task end to end on the same
Redis, Celery's Redis broker (database 0) and Redis result backend
(database 1), one worker process with the threads pool (-P threads,
concurrency 8), otherwise Celery's defaults. Usage and output: see
peer_common.py. `python3 peer_celery.py --worker SOCKET` is the worker.
"""
import os
import subprocess
import sys
import time

import peer_common as pc

try:
    import celery
    import redis
except ImportError as e:
    pc.missing("Celery", e)

SOCK = sys.argv[2] if sys.argv[1] == "--worker" else sys.argv[1]
app = celery.Celery("peer_celery", broker="redis+socket://" + SOCK,
                    backend="redis+socket://%s?virtual_host=1" % SOCK)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task
def empty():
    return None


def worker():
    app.worker_main(["worker", "-P", "threads", "-c", "8", "-l", "WARNING", "--without-heartbeat",
                     "--without-gossip", "--without-mingle"])


def main():
    sock, tasks, producers, rpc = pc.args()
    here = os.path.dirname(os.path.abspath(__file__))
    w = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", sock], cwd=here,
                         env=dict(os.environ, PYTHONPATH=here), stdout=subprocess.DEVNULL,
                         stderr=pc.worker_stderr())
    try:
        empty.delay().get(timeout=60)  # the worker is up
        db0, db1 = redis.Redis(unix_socket_path=sock), redis.Redis(unix_socket_path=sock, db=1)
        base = db1.dbsize()
        r0, p0, w0, t0 = pc.redis_cpu(db0), pc.own_cpu(), pc.proc_cpu(w.pid), time.monotonic()
        pc.produce(empty.delay, tasks, producers)
        done = pc.wait_until(lambda: db1.dbsize() - base, tasks)
        t1, r1, p1, w1 = time.monotonic(), pc.redis_cpu(db0), pc.own_cpu(), pc.proc_cpu(w.pid)
        completed = db1.dbsize() - base
        rpc_us = pc.round_trips_us(lambda: empty.delay().get(timeout=10), rpc)
        pc.report("Celery", celery.__version__, tasks, t1 - t0, r1 - r0, p1 - p0, w1 - w0,
                  completed, rpc_us, "threads pool, concurrency 8; RPC: delay().get()"
                  + ("" if done else "; timed out waiting for the results"))
    finally:
        pc.stop(w)


if __name__ == "__main__":
    worker() if sys.argv[1] == "--worker" else main()
