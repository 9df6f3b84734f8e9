"""Training throughput and the share of each step spent outside the model.

For each case, ``blindspot.training.train`` runs ``warmup + steps`` steps on the embedded template
(augmentation on) with a validation right after the warm-up, so the second row of ``metrics.csv``
covers exactly the measured steps: its ``images_per_s`` and ``outside_model`` (1 - time in forward,
backward and optimizer step / time of whole steps: batch sampling, augmentation, seeding, logging,
progress bar) are reported. The batch sampling + augmentation alone is also timed on the same
batches. Each case is repeated and the median is kept (the machine may be shared). Finally the
default ``quick`` run of ``bench-ae`` is timed end to end through the CLI.

Run: ``.venv/bin/python benchmarks/bench_training.py``; results go to ``benchmarks/training.md``
and ``benchmarks/training.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from blindspot import __version__
from blindspot.data import DataConfig, load_training, resolve
from blindspot.data.augment import Augmentation
from blindspot.training import PRESETS, _Batches, cpu_threads, make_config, train

HERE = Path(__file__).parent
CASES = [("bench-ae", 64, {}), ("ae", 128, {})]


def measure(model: str, size: int, options: dict, *, batch_size: int, warmup: int, steps: int, threads: int) -> dict:
    config = make_config("quick", size=size, batch_size=batch_size, steps=warmup + steps, val_every=warmup)
    with tempfile.TemporaryDirectory() as tmp:
        run = train(config, Path(tmp) / "run", model_name=model, model_options=options, device="cpu", threads=threads)
        with (run / "metrics.csv").open() as handle:
            row = list(csv.DictReader(handle))[1]
    train_set, _ = load_training(resolve(DataConfig().with_preparation(size=size), default_split="train"), hold_out=config.hold_out)
    batches = _Batches(train_set.images, config, torch.device("cpu"), Augmentation())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    batches(0)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        batches(step)
    data_ms = (time.perf_counter() - start) / steps * 1000
    torch.set_num_threads(before)
    step_ms = batch_size / float(row["images_per_s"]) * 1000
    return {"images_per_s": float(row["images_per_s"]), "outside_model": float(row["outside_model"]),
            "step_ms": step_ms, "data_and_augmentation_ms": data_ms}


def thread_comparison(batch_size: int, warmup: int, steps: int) -> list[dict]:
    """bench-ae 64 px with 1 and 2 threads, on an idle machine and with one core kept busy by another process."""
    rows = []
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for threads in (1, 2):
                result = measure("bench-ae", 64, {}, batch_size=batch_size, warmup=warmup, steps=steps, threads=threads)
                rows.append({"other_process_busy": busy, "threads": threads, "images_per_s": result["images_per_s"]})
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    return rows


def time_quick() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(Path(sys.executable).with_name("blindspot")), "train", "--model", "bench-ae", "--out", f"{tmp}/x"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="measured steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads [training's default: cores - 1]")
    args = parser.parse_args()
    threads = cpu_threads(args.threads)

    results = []
    for model, size, options in CASES:
        runs = [measure(model, size, options, batch_size=args.batch_size, warmup=args.warmup, steps=args.steps, threads=threads)
                for _ in range(args.repeats)]
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        results.append({"model": model, "size": size, "batch_size": args.batch_size, **median,
                        "repeats": [r["outside_model"] for r in runs]})
        print(f"{model} {size} px: {median['images_per_s']:.0f} images/s, outside the model {100 * median['outside_model']:.1f} %")
    comparison = thread_comparison(args.batch_size, args.warmup, 10)
    quick_seconds = [time_quick() for _ in range(args.repeats)]
    print(f"quick bench-ae: {statistics.median(quick_seconds):.1f} s")

    quick = PRESETS["quick"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} training thread(s)"
    payload = {"machine": machine, "threads": threads, "blindspot": __version__, "warmup": args.warmup, "steps": args.steps,
               "repeats": args.repeats, "cases": results, "threads_comparison": comparison,
               "quick_bench_ae_seconds": quick_seconds}
    (HERE / "training.json").write_text(json.dumps(payload, indent=2) + "\n")
    rows = "\n".join(
        f"| `{r['model']}` | {r['size']} | {r['batch_size']} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | "
        f"{r['data_and_augmentation_ms']:.2f} | {100 * r['outside_model']:.1f} % |"
        for r in results
    )
    (HERE / "training.md").write_text(
        "# Training throughput\n\n"
        f"Command: `.venv/bin/python benchmarks/bench_training.py` (defaults: batch {args.batch_size}, "
        f"{args.warmup} warm-up steps, {args.steps} measured steps, median of {args.repeats} repeats), "
        f"on {machine}, CPU only, embedded template with augmentation.\n\n"
        "| model | size (px) | batch | images/s | ms/step | sampling + augmentation (ms/step) | outside the model |\n"
        "|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "*Outside the model* = 1 − (forward + backward + optimizer step) / whole step, measured inside the "
        "training loop (`outside_model` in `metrics.csv`): batch sampling, augmentation, per-step seeding, "
        "logging and the progress bar. Validation and checkpoint writing (every `val_every` steps) are not "
        "part of a step.\n\n"
        "Why training uses one CPU thread fewer than there are cores (`blindspot.training.cpu_threads`): "
        "`bench-ae`, 64 px, batch 32, 10 measured steps, images/s:\n\n"
        "| another process busy on one core | 1 thread | 2 threads |\n|---|---|---|\n"
        + "\n".join(
            f"| {'yes' if busy else 'no'} | "
            + " | ".join(f"{r['images_per_s']:.0f}" for r in comparison if r["other_process_busy"] == busy) + " |"
            for busy in (False, True)
        )
        + "\n\nThe machine is shared, so the 'no' row may include other users' load.\n\n"
        f"Default `quick` run, end to end (`time .venv/bin/blindspot train --model bench-ae --out /tmp/x`, "
        f"{quick.steps} steps of batch {quick.batch_size} at {quick.size} px, validation every {quick.val_every} steps, "
        "data loading and process start included): "
        f"{', '.join(f'{s:.1f}' for s in quick_seconds)} s (median {statistics.median(quick_seconds):.1f} s).\n"
    )


if __name__ == "__main__":
    main()
