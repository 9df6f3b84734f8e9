"""Experiment 1 on one whole 256³ brain volume: the full 100 × 100 grid, its time, its peak memory, and the
ratio to the straightforward per-cell method (estimated from a sample of cells, whose AP must agree).

The volume is the embedded MNI152 template (197 × 233 × 189, 1 mm, brain-masked, in [0, 1]) centred
on a 256³ canvas, so nothing is downloaded. The per-cell method builds the ball anomaly, blurs the
whole 256³ volume with ``scipy.ndimage.gaussian_filter`` and calls
``sklearn.metrics.average_precision_score`` over all 16.7 M voxels, for each sampled cell; its time
for the full grid is the mean over the sample × 10,000. Peak memory is the resident memory of this
process and of its worker processes, sampled from ``/proc`` every 0.1 s (their sum at each instant).

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_volumes.py``); results go to
``benchmarks/volumes.md`` and ``benchmarks/volumes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import threading
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

from blindspot import __version__
from blindspot.anomalies3d import ball_anomaly
from blindspot.data.mni152 import load_mni152_volume
from blindspot.experiments.pitfalls import intensity_grid_axes
from blindspot.experiments.volumes import volume_intensity_experiment

HERE = Path(__file__).parent
SIDE = 256


def template_canvas(side: int = SIDE) -> np.ndarray:
    """The MNI152 template centred on a ``side``³ canvas (zero padding), float32."""
    template = load_mni152_volume()
    canvas = np.zeros((side,) * 3, np.float32)
    at = tuple(slice((side - n) // 2, (side - n) // 2 + n) for n in template.shape)
    canvas[at] = template
    return canvas


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


class MemorySampler:
    """Peak of (this process + its children)'s resident memory, sampled from /proc (Linux)."""

    def __init__(self, every: float = 0.1):
        self.every, self.peak_kib, self.peak_self_kib, self._stop = every, 0, 0, threading.Event()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            own = _rss_kib(me)
            total = own + sum(_rss_kib(c) for c in _children(me))
            self.peak_kib, self.peak_self_kib = max(self.peak_kib, total), max(self.peak_self_kib, own)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def per_cell(volume: np.ndarray, center: np.ndarray, intensity: float, sigma: float) -> float:
    anomaly = ball_anomaly(volume[None], intensity, radius=20, centers=[center])
    residual = np.abs(gaussian_filter(volume, sigma) - anomaly.images[0])
    return float(average_precision_score(anomaly.labels[0].ravel(), residual.ravel()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6, help="cells timed with the per-cell method")
    parser.add_argument("--threads", type=int, default=None, help="worker processes of the grid [default: all cores]")
    args = parser.parse_args()

    volume = template_canvas()
    intensities, sigmas = intensity_grid_axes(100, 100, 5.0)
    cpu_before = os.times()
    with MemorySampler() as memory:
        start = time.perf_counter()
        result = volume_intensity_experiment([volume], intensities=intensities, sigmas=sigmas, radius=20, seed=0,
                                             threads=args.threads)
        seconds = time.perf_counter() - start
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system
           + cpu_after.children_user - cpu_before.children_user + cpu_after.children_system - cpu_before.children_system)
    center = result["centers"][0]

    rng = np.random.default_rng(0)
    cells = [(int(i), int(s)) for i, s in zip(rng.integers(0, 100, args.cells), rng.integers(0, 100, args.cells))]
    cells[0] = (35, 99)  # the largest σ: the widest blur and the most non-zero negatives
    timings, differences = [], []
    for i, s in cells:
        start = time.perf_counter()
        reference = per_cell(volume, center, intensities[i], sigmas[s])
        timings.append(time.perf_counter() - start)
        differences.append(abs(reference - float(result["ap_per_volume"][0, i, s])))
    per_cell_grid = float(np.mean(timings)) * len(intensities) * len(sigmas)

    record = {
        "grid": "100 intensities x 100 sigmas in [0, 5], ball radius 20 voxels, AP over all 256^3 voxels",
        "volume": "MNI152 1 mm template x brain mask (197x233x189) centred on a 256^3 canvas",
        "foreground_voxels": int((volume > 0).sum()),
        "label_voxels": int(ball_anomaly(volume[None], 1.0, radius=20, centers=[center]).labels.sum()),
        "center": center.tolist(),
        "workers": args.threads or os.cpu_count(),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mib_total": memory.peak_kib / 1024,
        "peak_rss_mib_main": memory.peak_self_kib / 1024,
        "max_rss_mib_largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "per_cell_cells": [{"intensity": float(intensities[i]), "sigma": float(sigmas[s]), "seconds": t, "abs_ap_difference": d}
                           for (i, s), t, d in zip(cells, timings, differences)],
        "per_cell_seconds_per_cell": float(np.mean(timings)),
        "per_cell_seconds_full_grid_estimated": per_cell_grid,
        "speedup": per_cell_grid / seconds,
        "max_abs_ap_difference": float(max(differences)),
        "mean_ap": float(result["ap"].mean()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_after": list(os.getloadavg())},
        "blindspot": __version__,
    }
    (HERE / "volumes.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Experiment 1 on a whole 256³ volume: per-cell method vs blindspot",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_volumes.py` (blindspot {__version__}, {os.cpu_count()} CPU cores, "
        f"{platform.platform()}). Volume: {record['volume']} ({record['foreground_voxels']:,} foreground voxels); "
        f"full {record['grid']}; one ball centre ({record['label_voxels']:,} label voxels).",
        "",
        "| method | workers | seconds for the 100 × 100 grid | speed-up |",
        "|---|---|---|---|",
        f"| per-cell (ball + 3-D `gaussian_filter` + sklearn AP over 16.7 M voxels per cell), estimated from "
        f"{len(cells)} cells | 1 | {per_cell_grid:,.0f} ({per_cell_grid / 3600:.1f} h; {np.mean(timings):.2f} s per cell) | 1× |",
        f"| blindspot | {record['workers']} processes | {seconds:.1f} (CPU {cpu:.0f} s) | {per_cell_grid / seconds:,.0f}× |",
        "",
        f"Largest |ΔAP| between the two on the sampled cells: {max(differences):.2e} "
        f"(cells (intensity, σ): {', '.join(f'({intensities[i]:.2f}, {sigmas[s]:.2f})' for i, s in cells)}).",
        "",
        f"Peak resident memory during the grid (this process + its workers, sampled every 0.1 s): "
        f"{record['peak_rss_mib_total']:,.0f} MiB in all; {record['peak_rss_mib_main']:,.0f} MiB in the main process; "
        f"the largest worker peaked at {record['max_rss_mib_largest_worker']:,.0f} MiB. An [I, S, volume] float32 array "
        f"would be {100 * 100 * SIDE**3 * 4 / 2**40:.2f} TiB; the grid holds the volume, one blur per worker on the "
        "foreground's box grown by the kernel's reach, and the sort keys of one σ.",
        "",
        f"Load average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(other processes on the machine slow the grid in proportion).",
        "",
    ]
    (HERE / "volumes.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
