"""One launch of each GPU kernel on the benchmark problems, for Nsight Compute:

    ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \\
        --section WarpStateStats -k regex:"batch_kernel|advance_kernel" -c 6 \\
        python benchmarks/profile_gpu.py

(the result of a run on an H200 is in benchmarks/results/profile_gpu_h200.txt, where session 15
added --section SchedulerStats --section ComputeWorkloadAnalysis). Each problem runs one
loss+gradient launch (K flows) and a short flow solve (its advance_kernel launches).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sadfast
from _common import PROBLEMS

for name, K in (("poly1d", 200_000), ("poly2d", 50_000), ("poly4d", 20_000)):
    p = PROBLEMS[name]
    model = p.model()
    prob = model.bind(*p.data())
    th = model.init(K, seed=0)
    prob.loss_and_grad(th, device="cuda")
    sadfast.solve_flows(prob, th[: K // 4], 0.5, device="cuda")
    print(name, "done", flush=True)
