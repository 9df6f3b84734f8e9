"""``blindspot compare`` (blindspot.evaluation.compare): paired differences of evaluations of the same cases, equal to
an independent paired bootstrap, and refusals in one sentence."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from blindspot.cli import main
from blindspot.errors import BlindspotError
from blindspot.evaluation.compare import compare_evaluations
from blindspot.evaluation.intervals import load_case_data, resampled_metrics
from blindspot.metrics.bootstrap import multiplicities, percentile_interval, resample_indices
from blindspot.results import MARKER


def make_maps(root, *, seed, n=10, size=12, lesion_gain=0.6, skip=(), name="case{k:02d}"):
    """``root/maps`` and ``root/labels`` (.npy), odd cases with a lesion; ``skip`` drops cases."""
    rng = np.random.default_rng(seed)
    label_rng = np.random.default_rng(0)  # the same labels for every seed
    (root / "maps").mkdir(parents=True)
    (root / "labels").mkdir(exist_ok=True)
    for k in range(n):
        label = np.zeros((size, size), bool)
        if k % 2:
            r, c = label_rng.integers(1, size - 5, 2)
            label[r:r + 4, c:c + 4] = True
        if k in skip:
            continue
        np.save(root / "maps" / f"{name.format(k=k, v=k // 2)}.npy",
                (rng.random(label.shape) + lesion_gain * label * rng.random()).astype(np.float32))
        np.save(root / "labels" / f"{name.format(k=k, v=k // 2)}.npy", label)
    return root


def evaluate_cli(root, out, *extra):
    assert main(["evaluate", "--maps", str(root / "maps"), "--labels", str(root / "labels"), "--overlays", "0",
                 "--out", str(out), *map(str, extra)]) == 0
    return out


def test_compare_gives_each_evaluation_its_interval_and_paired_differences(tmp_path, capsys):
    a = evaluate_cli(make_maps(tmp_path / "a", seed=1), tmp_path / "eval-a", "--bootstrap", "300")
    b = evaluate_cli(make_maps(tmp_path / "b", seed=2, lesion_gain=1.5), tmp_path / "eval-b", "--bootstrap", "300")
    c = evaluate_cli(tmp_path / "a", tmp_path / "eval-c", "--median", "3", "--bootstrap", "300")
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out), "--bootstrap", "300", "--seed", "0"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "comparison.json", "differences.csv", "summary.md", "differences.png", MARKER}
    result = json.loads((out / "comparison.json").read_text())
    own = [json.loads((e / "metrics.json").read_text())["metrics"] for e in (a, b)]
    for key, entries in result["values"].items():  # with the same seed and resamples: each evaluation's own interval
        section, name = key.split(".")
        for entry, metrics in zip(entries, own):
            if name in metrics[section].get("intervals", {}):
                assert entry["interval"] == pytest.approx(metrics[section]["intervals"][name], abs=1e-12)
                assert entry["value"] == metrics[section][name]
    # the paired differences, independently: both evaluations on the same drawn cases
    data = [load_case_data(e / "bootstrap.npz") for e in (a, b)]
    weights = multiplicities(resample_indices(data[0].n_groups, 300, 0), data[0].n_groups)
    resampled = [resampled_metrics(d, weights) for d in data]
    rows = {r["metric"]: r for r in result["differences"]}
    for key in ("image.auroc", "pixel.ap", "pixel.best_dice", "at_threshold.dice"):
        section, name = key.split(".")
        low, high = percentile_interval(resampled[1][section][name] - resampled[0][section][name])
        assert rows[key]["low"] == pytest.approx(low, abs=1e-12) and rows[key]["high"] == pytest.approx(high, abs=1e-12)
        assert rows[key]["difference"] == pytest.approx(own[1][section][name] - own[0][section][name], abs=1e-15)
        assert rows[key]["verdict"] == ("indistinguishable" if low <= 0 <= high else "eval-b higher" if low > 0 else "eval-a higher")
    assert rows["pixel.ap"]["verdict"] == "eval-b higher"  # the stronger lesions of b are found
    summary = (out / "summary.md").read_text()
    assert "## Paired differences (B − A)" in summary and "the same resamples for every evaluation" in summary
    assert list(csv.DictReader((out / "differences.csv").open()))[0].keys() >= {"metric", "a", "b", "difference", "low", "high"}
    # three at once: every pair
    assert main(["compare", str(a), str(b), str(c), "--out", str(tmp_path / "cmp3"), "--bootstrap", "100"]) == 0
    pairs = {(r["a"], r["b"]) for r in json.loads((tmp_path / "cmp3" / "comparison.json").read_text())["differences"]}
    assert pairs == {("eval-a", "eval-b"), ("eval-a", "eval-c"), ("eval-b", "eval-c")}
    capsys.readouterr()


def test_compare_refuses_evaluations_of_different_cases_in_one_line(tmp_path, capsys):
    a = evaluate_cli(make_maps(tmp_path / "a", seed=1), tmp_path / "eval-a", "--bootstrap", "100")
    b = evaluate_cli(make_maps(tmp_path / "b", seed=2, skip=(3,)), tmp_path / "eval-b", "--bootstrap", "100")
    capsys.readouterr()
    out = tmp_path / "cmp"
    code = main(["compare", str(a), str(b), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: '{a}' and '{b}' are not evaluations of the same cases (10 and 9 cases; 'case03.npy' is only in")
    assert err.rstrip().endswith("compare evaluations of the same test cases.")
    assert not out.exists() and not (tmp_path / "cmp.partial").exists()


def test_compare_refuses_other_units_non_evaluations_and_missing_bootstrap(tmp_path, capsys):
    root = make_maps(tmp_path / "a", seed=1, name="v{v}_s{k}")
    pooled = evaluate_cli(root, tmp_path / "pooled", "--bootstrap", "100")
    volumes = evaluate_cli(root, tmp_path / "volumes", "--bootstrap", "100", "--pooling", "volume", "--volume-regex", r"(v\d+)_")
    off = evaluate_cli(root, tmp_path / "off", "--bootstrap", "0")
    with pytest.raises(BlindspotError, match="resamples cases and .* volumes: their bootstrap units differ"):
        compare_evaluations([pooled, volumes], tmp_path / "o1")
    with pytest.raises(BlindspotError, match="bootstrap.npz' does not exist; the evaluation was made with `bootstrap` 0"):
        compare_evaluations([pooled, off], tmp_path / "o2")
    with pytest.raises(BlindspotError, match="is not an evaluation folder"):
        (tmp_path / "fake").mkdir()
        (tmp_path / "fake" / "config.json").write_text('{"command": "pitfalls intensity"}')
        compare_evaluations([pooled, tmp_path / "fake"], tmp_path / "o3")
    with pytest.raises(BlindspotError, match="compare needs at least two evaluation folders; got 1"):
        compare_evaluations([pooled], tmp_path / "o4")
    code = main(["compare", str(pooled), str(off), "--out", str(tmp_path / "o5")])
    assert code == 2 and "--bootstrap 0" in capsys.readouterr().err
    assert not any((tmp_path / f"o{k}").exists() for k in range(1, 6))
