"""What a sweep of seeds x inits x bases x tasks needs, from the per-job wall times a finished run measured.

    python benches/sweep_plan.py RUN_DIR [RUN_DIR ...] --seeds 5 --inits 2 --bases 2 --tasks 4 --parallel 32 \
        [--gpu-speedup 259]
    python benches/sweep_plan.py --job-seconds train=SECONDS analyse=SECONDS circuit=SECONDS --coordinator SECONDS ...

Reads each run's results/jobs.json (written by `cogcircuits run`: one training, one analysis and one circuit
job per model, each with its wall time) and prints the measured mean and max per job kind, then the sweep's
total job time and its wall time when `--parallel` jobs run at once (the slowest job of each kind bounds a
wave). `--gpu-speedup` divides every job time by a factor measured elsewhere (benches/calibrate.py) and labels
the result an ESTIMATE. The per-run steps that are not jobs (evaluate, compare, claims, figures, report) are
listed from stages/*.json as the coordinator's share. `--job-seconds` / `--coordinator` take per-job times
measured elsewhere instead of run folders (e.g. from benches/calibrate.py's per-step and per-stage costs).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

KINDS = ("train", "analyse", "circuit")


def measured(runs: list[Path]) -> tuple[dict[str, list[float]], float]:
    """Wall times per job kind over every run, and the mean coordinator time (steps that are not jobs)."""
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    coord = []
    for run in runs:
        for j in json.loads((run / "results" / "jobs.json").read_text())["jobs"]:
            if j["state"] == "done" and j["wall_s"] is not None:
                times[j["id"].split("-")[0]].append(float(j["wall_s"]))
        steps = {p.stem: json.loads(p.read_text())["seconds"] for p in (run / "stages").glob("*.json")}
        coord.append(sum(v for k, v in steps.items() if k not in ("train", "analyses", "circuits")))
    return times, sum(coord) / max(1, len(coord))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--job-seconds", nargs=3, metavar="KIND=S", help="train=S[,S...] analyse=S circuit=S instead of "
                    "runs (several values: the jobs of that kind, e.g. a fine-tuning and a scratch training)")
    ap.add_argument("--coordinator", type=float, default=0.0, help="with --job-seconds: seconds per run")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--inits", type=int, default=2)
    ap.add_argument("--bases", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=32, help="jobs running at once on the cluster")
    ap.add_argument("--gpu-speedup", type=float, help="divide job times by this measured factor (an ESTIMATE)")
    a = ap.parse_args()
    if a.job_seconds:
        given = dict(kv.split("=") for kv in a.job_seconds)
        times, coord = {k: [float(v) for v in given[k].split(",")] for k in KINDS}, a.coordinator
    elif a.runs:
        times, coord = measured(a.runs)
    else:
        ap.error("give run folders or --job-seconds")
    n_models = a.seeds * a.inits * a.bases * a.tasks
    n_runs = a.bases * a.tasks
    print(f"measured over {len(a.runs)} run(s): {', '.join(str(r.name) for r in a.runs)}" if a.runs else
          "per-job seconds as given")
    total, wall = 0.0, 0.0
    for k in KINDS:
        t = times[k]
        if not t:
            print(f"  {k}: no measured jobs")
            continue
        mean, worst = sum(t) / len(t), max(t)
        total += n_models * mean
        wall += math.ceil(n_models / a.parallel) * worst
        print(f"  {k}: {len(t)} jobs, mean {mean:.1f} s, max {worst:.1f} s")
    print(f"  coordinator (evaluate, compare, claims, figures, report) per run: {coord:.1f} s")
    print(f"sweep: {a.seeds} seeds x {a.inits} inits x {a.bases} bases x {a.tasks} tasks = {n_models} models, "
          f"{3 * n_models} jobs, {n_runs} runs")
    print(f"  job time in all: {total / 3600:.2f} h; serially with the coordinators: "
          f"{(total + n_runs * coord) / 3600:.2f} h")
    print(f"  wall time with {a.parallel} jobs at once (waves bounded by the slowest job of each kind) plus the "
          f"coordinators one after another: {(wall + n_runs * coord) / 3600:.2f} h")
    if a.gpu_speedup:
        f = a.gpu_speedup
        print(f"  ESTIMATE with every job and coordinator {f:g}x faster on a GPU: job time {total / f / 3600:.2f} h, "
              f"wall {(wall + n_runs * coord) / f / 60:.1f} min")


if __name__ == "__main__":
    main()
