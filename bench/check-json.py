#!/usr/bin/env python3
"""Check the shape of `bench-pool --quick --json` (not its numbers), which
bench/report reads: every table, every figure's fields, a measured value
for ctasker in each figure, the whole scaling grid and the three task sizes
of the realistic mix. Usage: check-json.py BENCH-POOL. Under
ThreadSanitizer (TSAN_OPTIONS set), bench/tsan.supp is added. Exit status 0 if the
shape holds; otherwise each problem is printed and the status is 1.
"""
import json
import math
import os
import subprocess
import sys

POOLS = ["ctasker", "GThreadPool", "libuv"]
TABLES = {"throughput", "cpu", "csw", "latency", "mix", "size", "sizecpu", "memory", "scaling"}


def main():
    env = dict(os.environ, CT_BENCH_TASKS="2000", CT_BENCH_SAMPLES="10", CT_BENCH_REPS="1",
               CT_BENCH_MAX_TASKS="10000", CT_BENCH_MEM_TASKS="2000")
    if "TSAN_OPTIONS" in env:  # see tsan.supp
        supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tsan.supp")
        env["TSAN_OPTIONS"] += ":suppressions=" + supp
    out = subprocess.run([sys.argv[1], "--quick", "--json"], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    doc = json.loads(out)
    problems = []
    need = lambda cond, what: cond or problems.append(what)
    need(doc.get("benchmark") == "bench-pool", "benchmark is not bench-pool")
    need(doc.get("pools") == POOLS, "pools are not %s" % POOLS)
    need(isinstance(doc.get("settings"), dict) and doc["settings"].get("quick") is True,
         "settings.quick is not true")
    figures = doc.get("figures", [])
    need(TABLES == {f.get("table") for f in figures}, "tables differ from %s" % sorted(TABLES))
    for f in figures:
        name = "%s/%s" % (f.get("table"), f.get("label"))
        for key, kind in (("label", str), ("unit", str), ("higher_is_better", bool),
                          ("values", dict), ("ratios", dict), ("runs", list)):
            need(isinstance(f.get(key), kind), "%s: %s is not a %s" % (name, key, kind.__name__))
        values = f.get("values", {})
        need(sorted(values) == sorted(POOLS), "%s: values are not one per pool" % name)
        ct = values.get("ctasker")
        need(isinstance(ct, (int, float)) and math.isfinite(ct) and ct >= 0,
             "%s: no value for ctasker" % name)
        need(sorted(f.get("ratios", {})) == ["GThreadPool", "libuv"], "%s: ratios" % name)
        for r in f.get("runs", []):
            need(isinstance(r.get("load"), (int, float, type(None))) and
                 sorted(r.get("values", {})) == sorted(POOLS), "%s: a run's shape" % name)
    grid = {(f.get("threads"), f.get("producers")) for f in figures if f.get("table") == "scaling"}
    need(grid == {(t, p) for t in (1, 2, 4, 8) for p in (1, 2, 4, 8)}, "scaling grid: %s" % grid)
    sizes = {f.get("work_us") for f in figures if f.get("table") == "mix"}
    need(sizes == {1, 10, 100}, "mix task sizes: %s" % sizes)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
