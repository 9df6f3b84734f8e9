"""Case-level bootstrap at scale: 1,000 resamples of pooled pixel metrics over 10⁸ pixels in 300 cases.

Data: ``--cases`` synthetic float32 anomaly maps of ``--pixels / --cases`` pixels each (scores
distinct-ish, the worst case for tables), ``--positive-rate`` anomalous pixels whose scores are
shifted up (the data of ``bench_metrics.py``). Measured, each on these pixels:

* the per-case count tables (what ``evaluate``'s ranking pass computes anyway);
* the shared rows of the resampler (:class:`blindspot.evaluation.intervals.TableCollector`: exact
  while small, else float32 bit-pattern bins of 20 bits; here binned);
* ``--resamples`` resamples of pooled AP, AUROC and best Dice from the shared rows (matrix
  products and cumulative sums, no pixel touched), and their percentile intervals;
* ``evaluate`` (benchmark preset) with the bootstrap on and off, i.e. its whole cost in an evaluation;
* on ``--check-pixels`` pixels (10⁷ by default): the 20-bit intervals against the exact ones;
* coverage by simulation: how often the 95 % interval of the image AUROC holds the true AUROC.

Run: ``.venv/bin/python benchmarks/bench_bootstrap.py`` (about 6 minutes and 12 GB of RAM on 2 cores);
results go to ``benchmarks/bootstrap.md`` and ``benchmarks/bootstrap.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from bench_metrics import make_data  # the same synthetic maps as the metrics benchmark

from blindspot import __version__

HERE = Path(__file__).parent
METRICS = ("ap", "auroc", "best_dice")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


class _Case:
    def __init__(self, name):
        self.name, self.volume = name, name


def collect(tables):
    """What ``evaluate`` does with the case tables: keep them (binned beyond the row cap), then share rows."""
    from blindspot.evaluation.intervals import TableCollector

    collector = TableCollector("pooled")
    for k, table in enumerate(tables):
        collector.add(_Case(f"c{k}"), table, [])
    return collector.case_tables()


def resample(shared, n_resamples: int, seed: int):
    from blindspot.metrics.bootstrap import multiplicities, percentile_interval, resample_indices

    weights = multiplicities(resample_indices(shared.n_cases, n_resamples, seed), shared.n_cases)
    values = shared.metrics(weights)
    return {k: list(percentile_interval(values[k])) for k in METRICS}


def coverage(n_per_class: int, n_sets: int, seed: int, delta: float = 1.0) -> dict:
    """Share of data sets whose 95 % image-AUROC interval holds the true AUROC Φ(δ/√2) (normal N(0,1), anomalous N(δ,1))."""
    from scipy import stats

    from blindspot.metrics.bootstrap import CaseTables, multiplicities, percentile_interval, resample_indices
    from blindspot.metrics.tables import CountTable

    truth = float(stats.norm.cdf(delta / math.sqrt(2)))
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_per_class, bool), np.ones(n_per_class, bool)]
    covered, widths = 0, []
    for k in range(n_sets):
        scores = rng.normal(labels * delta, 1.0)
        shared = CaseTables.from_tables([CountTable(np.array([s]), np.array([int(y)]), np.array([1 - int(y)]))
                                         for y, s in zip(labels, scores)])
        weights = multiplicities(resample_indices(len(labels), 1000, seed * 1_000_003 + k), len(labels))
        low, high = percentile_interval(shared.metrics(weights)["auroc"])
        covered += low <= truth <= high
        widths.append(high - low)
    share = covered / n_sets
    return {"per_class": n_per_class, "data_sets": n_sets, "true_auroc": truth, "coverage": share,
            "standard_error": math.sqrt(share * (1 - share) / n_sets), "mean_width": float(np.mean(widths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=float, default=1e8, help="total pixels (default 1e8)")
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--positive-rate", type=float, default=0.01)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--check-pixels", type=float, default=1e7, help="pixels of the exact-vs-binned check (0: skip)")
    parser.add_argument("--coverage-sets", type=int, default=1000, help="simulated data sets per size (0: skip)")
    parser.add_argument("--skip-evaluate", action="store_true", help="skip evaluate with the bootstrap on and off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    start, load_start = time.perf_counter(), os.getloadavg()[0]

    from blindspot.evaluation.intervals import BINNED_BITS, CaseData  # noqa: F401  (imported: the code measured)
    from blindspot.metrics.bootstrap import CaseTables
    from blindspot.metrics.tables import count_table

    results: dict = {"pixels": int(args.pixels), "cases": args.cases, "positive_rate": args.positive_rate,
                     "resamples": args.resamples}
    labels, scores = make_data(int(args.pixels), args.cases, args.positive_rate, args.seed)
    tables, seconds = timed(lambda: [count_table(y, s) for y, s in zip(labels, scores)])
    results["case_tables"] = {"seconds": seconds, "rows": sum(len(t) for t in tables)}
    shared, seconds = timed(lambda: collect(tables))
    results["shared_rows"] = {"seconds": seconds, "resolution": shared.resolution, "rows": shared.n_rows, "entries": len(shared)}
    intervals, seconds = timed(lambda: resample(shared, args.resamples, args.seed))
    results["resamples_run"] = {"seconds": seconds, "intervals": intervals}
    results["bootstrap_seconds"] = results["shared_rows"]["seconds"] + seconds
    del tables

    if not args.skip_evaluate:
        from blindspot.evaluation import Case, evaluate, make_options

        cases = [Case(f"v{k}", s.reshape(1, -1), y.reshape(1, -1)) for k, (y, s) in enumerate(zip(labels, scores))]
        on, seconds_on = timed(lambda: evaluate(cases, make_options("benchmark", bootstrap=args.resamples), n_overlays=0))
        _, seconds_off = timed(lambda: evaluate(cases, make_options("benchmark", bootstrap=0), n_overlays=0))
        results["evaluate"] = {"seconds_with_bootstrap": seconds_on, "seconds_without": seconds_off,
                               "pixel": {k: on.metrics["pixel"][k] for k in METRICS},
                               "intervals": on.metrics["pixel"]["intervals"], "bootstrap": on.metrics["bootstrap"]}
        del cases, on
    del labels, scores

    if args.check_pixels:
        labels, scores = make_data(int(args.check_pixels), args.cases, args.positive_rate, args.seed + 1)
        tables = [count_table(y, s) for y, s in zip(labels, scores)]
        del labels, scores
        check = {"pixels": int(args.check_pixels)}
        for name, bits in (("exact", None), ("binned", BINNED_BITS)):
            shared_check, build = timed(lambda: CaseTables.from_tables(tables, bits=bits))
            found, run = timed(lambda: resample(shared_check, args.resamples, args.seed))
            check[name] = {"rows": shared_check.n_rows, "build_seconds": build, "resample_seconds": run, "intervals": found}
        check["max_difference"] = max(abs(a - b) for k in METRICS for a, b in zip(check["exact"]["intervals"][k],
                                                                                  check["binned"]["intervals"][k]))
        results["exact_vs_binned"] = check
        del tables

    if args.coverage_sets:
        results["coverage"] = [coverage(n, args.coverage_sets, seed=args.seed + 1 + j) for j, n in enumerate((30, 100))]

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}"
    results.update(machine=machine, blindspot=__version__, total_minutes=(time.perf_counter() - start) / 60,
                   load_average=[load_start, os.getloadavg()[0]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bootstrap.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "bootstrap.md").write_text(report(results))
    print(report(results))


def report(r: dict) -> str:
    def iv(pair):
        return f"[{pair[0]:.5f}, {pair[1]:.5f}]"

    lines = ["# Bootstrap intervals at scale", "",
             f"{r['pixels']:,} float32 pixels in {r['cases']} cases, {r['positive_rate']:.0%} anomalous; {r['resamples']:,} "
             f"resamples of the cases; blindspot {r['blindspot']}; {r['machine']}. Command: `python benchmarks/bench_bootstrap.py` "
             "(written by `benchmarks/bench_bootstrap.py`).", "",
             "| step | seconds | |", "|---|---|---|",
             f"| per-case count tables (computed by `evaluate` anyway) | {r['case_tables']['seconds']:.1f} | "
             f"{r['case_tables']['rows']:,} rows |",
             f"| shared rows of the resampler | {r['shared_rows']['seconds']:.1f} | {r['shared_rows']['resolution']}: "
             f"{r['shared_rows']['rows']:,} rows, {r['shared_rows']['entries']:,} case entries |",
             f"| {r['resamples']:,} resamples: pooled AP, AUROC, best Dice and their intervals | "
             f"{r['resamples_run']['seconds']:.1f} | |",
             f"| **bootstrap of the pooled pixel metrics (shared rows + resamples)** | **{r['bootstrap_seconds']:.1f}** | "
             "target: 30 s on 2 cores |", ""]
    lines += ["95 % intervals: " + ", ".join(f"{k} {iv(v)}" for k, v in r["resamples_run"]["intervals"].items()) + ".", ""]
    if "evaluate" in r:
        e = r["evaluate"]
        lines += [f"`evaluate` (benchmark preset, in memory, overlays off) on the same cases: {e['seconds_with_bootstrap']:.1f} s "
                  f"with the bootstrap, {e['seconds_without']:.1f} s without (`--bootstrap 0`); the bootstrap adds "
                  f"{e['seconds_with_bootstrap'] - e['seconds_without']:.1f} s. Pooled AP {e['pixel']['ap']:.6f} "
                  f"{iv(e['intervals']['ap'])}, AUROC {e['pixel']['auroc']:.6f} {iv(e['intervals']['auroc'])}, best Dice "
                  f"{e['pixel']['best_dice']:.6f} {iv(e['intervals']['best_dice'])} (resample tables: "
                  f"{e['bootstrap']['pixel_tables']}).", ""]
    if "exact_vs_binned" in r:
        c = r["exact_vs_binned"]
        lines += ["## Exact against binned resample tables", "",
                  f"On {c['pixels']:,} other pixels in {r['cases']} cases, the same resamples from exact shared rows and from "
                  "20-bit bins:", "", "| tables | rows | build s | resamples s | AP | AUROC | best Dice |", "|---|---|---|---|---|---|---|"]
        for name in ("exact", "binned"):
            x = c[name]
            lines.append(f"| {name} | {x['rows']:,} | {x['build_seconds']:.1f} | {x['resample_seconds']:.1f} | "
                         + " | ".join(iv(x["intervals"][k]) for k in METRICS) + " |")
        lines += ["", f"Largest difference of an interval end: {c['max_difference']:.1e}. `evaluate` uses exact rows while "
                  "rows × (cases + 64) ≤ 2²⁴ and bins beyond (it records which in `metrics.json`).", ""]
    if "coverage" in r:
        lines += ["## Coverage by simulation", "",
                  "Normal scores N(0, 1), anomalous N(1, 1): true AUROC Φ(1/√2) = 0.7602. Share of data sets whose 95 % "
                  "percentile interval of the image AUROC (1,000 resamples of the cases) holds it:", "",
                  "| cases per class | data sets | coverage | ± standard error | mean interval width |", "|---|---|---|---|---|"]
        for c in r["coverage"]:
            lines.append(f"| {c['per_class']} | {c['data_sets']} | {c['coverage']:.3f} | {c['standard_error']:.3f} | "
                         f"{c['mean_width']:.3f} |")
        lines.append("")
    lines += [f"Whole benchmark: {r['total_minutes']:.1f} minutes; 1-minute load average {r['load_average'][0]:.1f} at the start "
              f"and {r['load_average'][1]:.1f} at the end (the benchmark itself adds about 1; more means other processes "
              "shared the cores and the seconds above are inflated).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
