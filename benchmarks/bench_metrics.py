"""Pooled pixel metrics at scale: blindspot's one-sort exact metrics against sklearn and a threshold loop.

Data: ``--volumes`` synthetic float32 anomaly maps of ``--pixels / --volumes`` pixels each (all
scores distinct-ish, the worst case for tie compression), ``--positive-rate`` anomalous pixels
whose scores are shifted up. Methods, each on the same pooled pixels:

* ``count_table + summarize``: blindspot's pooled exact AP, AUROC and best Dice (one sort of the
  scores via ``np.unique``, then cumulative counts), and ``benchmark_best_dice`` of that table;
* ``evaluate(benchmark preset)``: the whole protocol (per-case metrics, pooled metrics, oracle
  threshold pass) on the in-memory cases, overlays off;
* ``ExactAccumulator`` / ``BinnedAccumulator``: streaming one volume at a time, then merged;
* merging the per-volume count tables: ``merge_tables`` (the one-pixel rows split off table by
  table and their values sorted without an index; ``benchmarks/cluster.md`` compares it with the
  argsort of every row it replaced and with a timsort of the sorted runs) against a single
  packed-key quicksort of every row (reimplemented here as the baseline), with their peak memory
  (tracemalloc);
* the functional ``blindspot.metrics.average_precision`` + ``best_dice`` (a count table each);
* ``sklearn.metrics.average_precision_score`` + ``roc_auc_score``;
* a 200-threshold loop (rank-spaced thresholds, as the MedIAnomaly benchmark scans for best Dice):
  one sort for the quantiles plus 200 passes of ``scores >= t`` over every pixel.

Run: ``.venv/bin/python benchmarks/bench_metrics.py`` (1e8 pixels in 300 volumes, about 5 minutes and
10 GB of RAM on 2 cores); results go to ``benchmarks/metrics.md`` and ``benchmarks/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from blindspot import __version__

HERE = Path(__file__).parent


def timed(fn, repeat: int = 1):
    """(value, seconds of each run): fresh memory makes first runs slower here (page faults), so fast
    methods are run twice and both times reported."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        seconds.append(time.perf_counter() - start)
    return value, seconds


def timed_peak(fn, repeat: int = 2):
    """Like :func:`timed`, plus the peak of memory allocated during the first run (MiB, tracemalloc)."""
    tracemalloc.start()
    value, seconds = timed(fn)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    if repeat > 1:
        seconds += timed(fn, repeat - 1)[1]
    return value, seconds, peak


def single_sort_merge(tables):
    """The merge that ``merge_tables`` replaced (float32 only): one sort of every row of every table.

    float32 values are sorted as packed uint64 keys (order-preserving value bits, then the row
    index) with numpy's vectorised quicksort, then equal values are summed with ``reduceat``.
    """
    from blindspot.metrics import CountTable

    values = np.concatenate([t.values for t in tables])
    bits = values.view(np.uint32)
    bits = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    keys = (bits.astype(np.uint64) << np.uint64(32)) | np.arange(len(values), dtype=np.uint64)
    keys.sort()
    order = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    values = values[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    positives = np.add.reduceat(np.concatenate([t.positives for t in tables])[order], starts)
    negatives = np.add.reduceat(np.concatenate([t.negatives for t in tables])[order], starts)
    return CountTable(values[starts], positives, negatives)


def merge_comparison(tables, repeat: int) -> dict:
    """The single-sort baseline against ``merge_tables`` on the same tables: seconds of every run,
    peak memory of the first run, and whether the results are identical."""
    from blindspot.metrics.tables import merge_tables

    baseline, single, single_peak = timed_peak(lambda: single_sort_merge(tables), repeat)
    merged, merge_seconds, merge_peak = timed_peak(lambda: merge_tables(tables), repeat)
    return {
        "rows": sum(len(t) for t in tables),
        "table_mib": sum(t.values.nbytes + t.positives.nbytes + t.negatives.nbytes for t in tables) / 2**20,
        "merged_rows": len(merged),
        "identical": all(np.array_equal(getattr(merged, f), getattr(baseline, f)) for f in ("values", "positives", "negatives")),
        "single_sort_seconds": single,
        "single_sort_peak_mib": single_peak,
        "merge_seconds": merge_seconds,
        "merge_peak_mib": merge_peak,
    }


def make_data(pixels: int, volumes: int, rate: float, seed: int):
    """``volumes`` maps of ``pixels // volumes`` float32 scores, ``rate`` of them anomalous and shifted up (+U(0, 0.5))."""
    rng = np.random.default_rng(seed)
    per = pixels // volumes
    labels = [rng.random(per) < rate for _ in range(volumes)]
    scores = []
    for y in labels:
        s = rng.random(per, dtype=np.float32)
        s[y] += np.float32(0.5) * rng.random(int(y.sum()), dtype=np.float32)
        scores.append(s)
    return labels, scores


def threshold_loop(labels: np.ndarray, scores: np.ndarray, n: int = 200) -> float:
    """Best Dice over ``n`` rank-spaced thresholds (the benchmark's grid)."""
    ranked = np.sort(scores)
    thresholds = ranked[np.linspace(0, len(ranked) - 1, n).round().astype(int)]
    n_pos = int(labels.sum())
    best = 0.0
    for t in thresholds:
        predicted = scores >= t
        tp = int(np.count_nonzero(predicted & labels))
        best = max(best, 2 * tp / (n_pos + int(np.count_nonzero(predicted))))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=float, default=1e8, help="total pixels (default 1e8)")
    parser.add_argument("--volumes", type=int, default=300, help="number of maps the pixels are split into")
    parser.add_argument("--positive-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-slow", action="store_true", help="skip sklearn, the functional metrics and the loop")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    start, load_start = time.perf_counter(), os.getloadavg()[0]

    from blindspot.evaluation import Case, evaluate, make_options
    from blindspot.metrics.accumulators import BinnedAccumulator, ExactAccumulator
    from blindspot.metrics.tables import benchmark_best_dice, count_table, summarize

    labels, scores = make_data(int(args.pixels), args.volumes, args.positive_rate, args.seed)
    y, s = np.concatenate(labels), np.concatenate(scores)
    rows, results = [], {}

    pooled, seconds = timed(lambda: count_table(y, s), 2)
    reference, summary_seconds = timed(lambda: summarize(count_table(y, s)), 2)
    rows.append(("blindspot count_table + summarize (pooled, exact)", summary_seconds, reference["ap"], reference["best_dice"]))
    results["pooled_exact"] = {"seconds": summary_seconds, "count_table_seconds": seconds, **reference}
    (grid_dice, grid_threshold), seconds = timed(lambda table=pooled: benchmark_best_dice(table), 2)
    rows.append(("benchmark_best_dice of the pooled table (MedIAnomaly rule, exact)", seconds, float("nan"), grid_dice))
    results["benchmark_best_dice"] = {"seconds": seconds, "best_dice": grid_dice, "threshold": grid_threshold}
    del pooled

    cases = [Case(f"v{k}", sc.reshape(1, -1), lb.reshape(1, -1)) for k, (lb, sc) in enumerate(zip(labels, scores))]
    evaluation, seconds = timed(lambda c=cases: evaluate(c, make_options("benchmark"), n_overlays=0), 2)
    pixel = evaluation.metrics["pixel"]
    rows.append(("blindspot evaluate, benchmark preset (per-case + pooled + threshold pass)", seconds, pixel["ap"], pixel["best_dice"]))
    results["evaluate"] = {"seconds": seconds, "ap": pixel["ap"], "best_dice": pixel["best_dice"]}
    del cases, evaluation

    def stream(accumulator):
        for lb, sc in zip(labels, scores):
            accumulator.update(lb, sc)
        return accumulator.compute()

    exact, seconds = timed(lambda: stream(ExactAccumulator()), 2)
    rows.append(("ExactAccumulator, one update per volume", seconds, exact["ap"], exact["best_dice"]))
    results["stream_exact"] = {"seconds": seconds, "ap": exact["ap"], "best_dice": exact["best_dice"]}
    binned, seconds = timed(lambda: stream(BinnedAccumulator(20)), 2)
    rows.append(("BinnedAccumulator(bits=20), one update per volume", seconds, binned["ap"], binned["best_dice"]))
    results["stream_binned"] = {"seconds": seconds, "ap": binned["ap"], "best_dice": binned["best_dice"], "bounds": binned["bounds"]}

    # merging the per-volume tables: once on these pixels, three times on a 10x smaller set
    tables, seconds = timed(lambda: [count_table(lb, sc) for lb, sc in zip(labels, scores)])
    merges = {"full": {"pixels": int(args.pixels), "per_volume_tables_seconds": seconds, **merge_comparison(tables, 1)}}
    del tables
    small_pixels = int(min(1e7, args.pixels))
    small = make_data(small_pixels, args.volumes, args.positive_rate, args.seed + 1)
    merges["small"] = {"pixels": small_pixels, **merge_comparison([count_table(lb, sc) for lb, sc in zip(*small)], 3)}
    del small
    results["merge_tables"] = {"volumes": args.volumes, **merges}

    if not args.skip_slow:
        from sklearn.metrics import average_precision_score, roc_auc_score

        from blindspot.metrics import average_precision, best_dice

        (ap, dice), seconds = timed(lambda: (average_precision(y, s), best_dice(y, s)[0]))
        rows.append(("blindspot.metrics average_precision + best_dice (functional: a count table each)", seconds, ap, dice))
        results["metrics_module"] = {"seconds": seconds, "ap": ap, "best_dice": dice}
        (ap, auc), seconds = timed(lambda: (average_precision_score(y, s), roc_auc_score(y, s)))
        rows.append(("sklearn average_precision_score + roc_auc_score (no best Dice)", seconds, ap, float("nan")))
        results["sklearn"] = {"seconds": seconds, "ap": ap, "auroc": auc}
        dice, seconds = timed(lambda: threshold_loop(y, s))
        rows.append(("200 rank-spaced thresholds loop (best Dice only)", seconds, float("nan"), dice))
        results["loop_200"] = {"seconds": seconds, "best_dice": dice}

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}"
    command = "python benchmarks/bench_metrics.py" + ("" if args.pixels == 1e8 else f" --pixels {args.pixels:g}") \
        + ("" if args.volumes == 300 else f" --volumes {args.volumes}")
    lines = [
        "# Pooled pixel metrics at scale",
        "",
        f"{int(args.pixels):,} float32 pixels in {args.volumes} maps, {args.positive_rate:.0%} anomalous; "
        f"blindspot {__version__}; {machine}. Command: `{command}` (written by `benchmarks/bench_metrics.py`).",
        "",
        "| method | seconds (first run / repeat) | AP | best Dice |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {' / '.join(f'{x:.1f}' for x in sec)} | {ap:.6f} | {dice:.6f} |".replace("nan", "—")
              for name, sec, ap, dice in rows]
    low, high = binned["bounds"]["ap"]
    lines += [
        "",
        f"Exact AP {reference['ap']:.10f}, AUROC {reference['auroc']:.10f}, best Dice {reference['best_dice']:.10f} "
        f"(threshold {reference['best_dice_threshold']:.8g}).",
        f"Binned (20 bits, relative bin width 2^-11): AP {binned['ap']:.10f}, guaranteed interval [{low:.10f}, {high:.10f}] "
        f"(width {high - low:.2e}); best Dice {binned['best_dice']:.10f}.",
    ]
    if "sklearn" in results:
        lines.append(f"sklearn AP − blindspot AP = {results['sklearn']['ap'] - reference['ap']:.2e}; "
                     f"AUROC difference {results['sklearn']['auroc'] - reference['auroc']:.2e}.")
        lines.append(f"The 200-threshold grid misses the exact best Dice by {reference['best_dice'] - results['loop_200']['best_dice']:.2e} "
                     f"and takes {results['loop_200']['seconds'][0] / results['pooled_exact']['seconds'][0]:.1f}× the time of the exact pooled metrics.")
    full, small = merges["full"], merges["small"]
    runs = lambda seconds: " / ".join(f"{x:.1f}" for x in seconds)  # noqa: E731
    lines += [
        "",
        f"## Merging {args.volumes} per-volume count tables",
        "",
        f"The count tables of the {args.volumes} maps above ({full['rows']:,} rows, {full['table_mib']:.0f} MiB; built in "
        f"{full['per_volume_tables_seconds'][0]:.1f} s), merged into one of {full['merged_rows']:,} distinct values, once; "
        f"then, to repeat it three times within the time budget, the tables of {small['pixels']:,} other pixels in "
        f"{args.volumes} maps ({small['rows']:,} rows). Both merges give identical tables: "
        f"{full['identical'] and small['identical']}. Peak = memory allocated during the first run (tracemalloc), "
        f"on top of the tables.",
        "",
        f"| merge | {full['pixels']:,} pixels: seconds | peak MiB | {small['pixels']:,} pixels: seconds (3 runs) | peak MiB |",
        "|---|---|---|---|---|",
        f"| single sort of all rows (the merge before: float32 keys, numpy quicksort) | {runs(full['single_sort_seconds'])} | "
        f"{full['single_sort_peak_mib']:.0f} | {runs(small['single_sort_seconds'])} | {small['single_sort_peak_mib']:.0f} |",
        f"| `merge_tables`: one-pixel rows split off per table, their values sorted without an index | {runs(full['merge_seconds'])} | "
        f"{full['merge_peak_mib']:.0f} | {runs(small['merge_seconds'])} | {small['merge_peak_mib']:.0f} |",
        "",
        f"Per-volume path (`ExactAccumulator.update` per volume, then `merge_tables`): "
        f"{runs(results['stream_exact']['seconds'])} s, against {runs(results['pooled_exact']['count_table_seconds'])} s "
        f"for one `count_table` of the pooled pixels (which needs them all in memory at once).",
        "",
        f"Whole benchmark: {(time.perf_counter() - start) / 60:.1f} minutes; 1-minute load average {load_start:.1f} at the "
        f"start and {os.getloadavg()[0]:.1f} at the end (the benchmark itself adds about 1; more means other processes "
        f"shared the cores and the seconds above are inflated).",
    ]
    (args.out / "metrics.md").write_text("\n".join(lines) + "\n")
    (args.out / "metrics.json").write_text(json.dumps({"machine": machine, "command": command, "pixels": int(args.pixels),
                                                       "volumes": args.volumes, "results": results}, indent=2, default=float) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
