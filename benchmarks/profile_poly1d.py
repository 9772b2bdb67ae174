"""Where a poly1d gradient spends its time: run under py-spy with native frames.

    py-spy record --native -r 500 -f raw -o prof.txt -- python benchmarks/profile_poly1d.py
    python benchmarks/profile_poly1d.py --summarize prof.txt

The first command loops sadfast's batched gradient (K=1024, one thread) for 8 s; the second sums
the samples inside ``loss_and_grad`` by the shared library their innermost frame is in (the
extension is stripped, so sadfast's own code counts as one).
"""

from __future__ import annotations

import collections
import re
import sys
import time


def loop(seconds: float = 8.0) -> None:
    import sadfast
    from sadfast.bench.problems import PROBLEMS

    sadfast.set_num_threads(1)
    p = PROBLEMS["poly1d"]
    prob = p.model().bind(*p.data())
    theta = p.model().init(1024, seed=0)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        prob.loss_and_grad(theta)
        n += 1
    print(f"{(time.perf_counter() - t0) / n / 1024 * 1e6:.3f} us per flow-gradient (1 thread)")


def summarize(path: str) -> None:
    by_lib: collections.Counter[str] = collections.Counter()
    for line in open(path):
        line = line.strip()
        if "loss_and_grad" not in line:
            continue
        stack, n = line.rsplit(" ", 1)
        m = re.search(r"\(([^)]+)\)", stack.split(";")[-1])
        by_lib[(m.group(1) if m else "?").split(":")[0].rsplit("/", 1)[-1]] += int(n)
    total = sum(by_lib.values())
    print(f"{total} samples inside loss_and_grad")
    for lib, n in by_lib.most_common(8):
        print(f"{100 * n / total:5.1f}%  {lib}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--summarize":
        summarize(sys.argv[2])
    else:
        loop()
