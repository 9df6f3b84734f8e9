"""Run a latent-size sweep (and an evaluation) on a SLURM cluster through dask-jobqueue.

Not run by the tests: it needs a SLURM cluster and ``pip install dask-jobqueue`` (not a dependency of
blindspot). Run it on the login node, inside the environment blindspot is installed in::

    python examples/slurm_sweep.py --data /shared/brats2021 --out /shared/sweeps/brats2021

What it does (docs/cluster.md explains each point):

1. starts a Dask scheduler here and asks SLURM for GPU jobs, each running one Dask worker that
   declares the resource ``GPU=1`` (so it trains one run at a time) and activates the same
   environment;
2. runs ``blindspot sweep latent ... --device cuda --scheduler ADDRESS``: every (d, repeat) run is
   a task; the workers read ``--data`` and write the run folders under ``--out`` themselves, so
   both must be on storage every node sees (a shared file system);
3. evaluates the best run's checkpoint on the test split with the workers reading the images;
4. closes the cluster (the SLURM jobs end with it).

A worker lost to a pre-empted or failed job does not lose its run: Dask runs the task again on
another worker, which resumes the run from its last checkpoint in ``OUT/runs/d{d}-r{k}.partial``.
If this script itself stops, run it again: finished runs are not recomputed.
"""

from __future__ import annotations

import argparse
import csv
import sys

from dask_jobqueue import SLURMCluster

from blindspot.cli import main as blindspot


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data set on the shared file system")
    parser.add_argument("--out", required=True, help="sweep folder on the shared file system")
    parser.add_argument("--jobs", type=int, default=8, help="SLURM jobs, one GPU worker each")
    parser.add_argument("--partition", default="gpu")
    parser.add_argument("--account", default=None)
    parser.add_argument("--walltime", default="24:00:00")
    parser.add_argument("--venv", default=sys.prefix, help="environment the workers activate (default: this one)")
    return parser.parse_args()


def run() -> int:
    args = parse()
    cluster = SLURMCluster(
        queue=args.partition,
        account=args.account,
        cores=8,  # CPU cores per job: data loading and the CPU side of training
        processes=1,  # one worker process per job ...
        memory="32GB",
        walltime=args.walltime,
        job_extra_directives=["--gres=gpu:1"],  # ... with one GPU
        worker_extra_args=["--resources", "GPU=1", "--nthreads", "1"],  # one GPU task at a time
        job_script_prologue=[f"source {args.venv}/bin/activate"],
        log_directory="dask-logs",
    )
    try:
        cluster.scale(jobs=args.jobs)
        address = cluster.scheduler_address
        print(f"scheduler at {address}; dashboard {cluster.dashboard_link}", flush=True)
        code = blindspot(["sweep", "latent", "--data", args.data, "--dims", "1 2 4 8 16 32 64 128", "--repeats", "3",
                          "--preset", "benchmark", "--device", "cuda", "--scheduler", address, "--out", args.out])
        if code:
            return code
        with open(f"{args.out}/runs.csv", newline="") as handle:
            best = max(csv.DictReader(handle), key=lambda row: float(row["image_auroc"]))
        checkpoint = f"{args.out}/runs/d{best['d']}-r{best['repeat']}/last.pt"
        return blindspot(["evaluate", "--checkpoint", checkpoint, "--data", args.data, "--preset", "benchmark",
                          "--device", "cuda", "--scheduler", address, "--out", f"{args.out}-best-evaluation"])
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(run())
