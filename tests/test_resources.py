"""Memory checked before it is paid (blindspot.resources): the system's limits read, one-sentence refusals, and
estimates that follow the real peak of the resamples and the grid (measured with tracemalloc)."""

from __future__ import annotations

import resource
import tracemalloc

import numpy as np
import pytest

import blindspot.resources as resources
from blindspot.data import DataConfig, load
from blindspot.errors import BlindspotError
from blindspot.evaluation import Case, evaluate, make_options
from blindspot.evaluation.intervals import add_intervals, resample_values
from blindspot.experiments.grid import grid_bytes, run_grid
from blindspot.metrics.bootstrap import mean_intervals, multiplicities, resample_bytes, resample_indices


def test_the_tightest_cgroup_limit_counts(tmp_path, monkeypatch):
    v2, v1, unlimited = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    for folder, files in ((v2, {"memory.max": "1000000\n", "memory.current": "400000\n"}),
                          (v1, {"memory.limit_in_bytes": "900000\n", "memory.usage_in_bytes": "100000\n"}),
                          (unlimited, {"memory.max": "max\n", "memory.current": "5\n"})):
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    monkeypatch.setattr(resources, "_cgroup_paths", lambda: [v2, v1, unlimited])
    assert resources._cgroup_available() == 600000
    monkeypatch.setattr(resources, "_cgroup_paths", lambda: [v1, unlimited])
    assert resources._cgroup_available() == 800000
    monkeypatch.setattr(resources, "_cgroup_paths", lambda: [unlimited])
    assert resources._cgroup_available() is None


def test_available_memory_is_the_smallest_known_limit(monkeypatch):
    monkeypatch.setattr(resources, "_meminfo_available", lambda: 8 << 30)
    monkeypatch.setattr(resources, "_cgroup_available", lambda: 2 << 30)
    monkeypatch.setattr(resources, "_rlimit_available", lambda: None)
    assert resources.available_memory() == 2 << 30
    monkeypatch.setattr(resources, "_rlimit_available", lambda: 1 << 30)
    assert resources.available_memory() == 1 << 30
    for name in ("_meminfo_available", "_cgroup_available", "_rlimit_available"):
        monkeypatch.setattr(resources, name, lambda: None)
    assert resources.available_memory() == resources.FALLBACK


def test_an_address_space_limit_counts(monkeypatch):
    limit = 1 << 40
    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limit, resource.RLIM_INFINITY)
                        if which == resource.RLIMIT_AS else real(which))
    left = resources._rlimit_available()
    assert left is not None and 0 < left < limit  # the limit less what the process already uses


def test_a_refusal_is_one_sentence_with_the_estimate_the_limit_and_a_way_out(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 3_200_000_000)
    resources.check_memory(3_200_000_000, "the resample weights", parameter="bootstrap", value=20_000_000, per_unit=160)
    with pytest.raises(BlindspotError) as caught:
        resources.check_memory(16_000_000_000, "the resample weights", parameter="bootstrap", value=100_000_000, per_unit=160)
    assert str(caught.value) == ("`bootstrap` 100,000,000 needs about 16.0 GB for the resample weights; only 3.2 GB is "
                                 "available: use at most 20,000,000.")
    with pytest.raises(BlindspotError, match="even 1 does not fit"):
        resources.check_memory(44_000_000_000, "the grid", parameter="n_sigmas", value=10, per_unit=4_000_000_000)


def test_bytes_read_as_people_write_them():
    assert [resources.format_bytes(n) for n in (512, 3_000, 512_000_000, 16e9, 3.2e12)] == \
        ["512 B", "3.0 kB", "512.0 MB", "16.0 GB", "3.2 TB"]


def peak_bytes(compute) -> int:
    """The peak of the memory numpy and Python allocate while ``compute`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        compute()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_near(peak: float, estimate: float) -> None:
    """An estimate within a factor 2 of the measured peak (either way)."""
    assert 0.5 <= peak / estimate <= 2, (peak, estimate)


def test_the_resample_estimates_follow_the_real_peak():
    n, b = 20, 20000
    assert_near(peak_bytes(lambda: multiplicities(resample_indices(n, b, 0), n)), resample_bytes(n, b))
    assert_near(peak_bytes(lambda: mean_intervals(np.random.default_rng(0).random((n, 3)), n_resamples=b)),
                resample_bytes(n, b, 9))
    rng = np.random.default_rng(1)
    cases = []
    for k in range(n):
        label = np.zeros((12, 12), bool)
        label[3:6, 3:6] = k % 2 == 1
        cases.append(Case(f"c{k}", (rng.random(label.shape) + label).astype(np.float32), label))
    evaluation = evaluate(cases, make_options(bootstrap=100), n_overlays=0)
    metrics = {k: dict(v) if isinstance(v, dict) else v for k, v in evaluation.metrics.items()}
    data = evaluation.cases
    assert_near(peak_bytes(lambda: add_intervals(metrics, data, n_resamples=b, confidence=0.95, seed=0)),
                resample_bytes(data.n_groups, b, resample_values(data)))


@pytest.mark.parametrize(("n_variants", "n_sigmas"), [(100, 4), (4, 100)])
def test_the_grid_estimate_follows_the_real_peak(n_variants, n_sigmas):
    images = load(DataConfig()).images[:2]
    rows, cols = np.mgrid[:images.shape[1], :images.shape[2]]
    labels = np.broadcast_to((rows - 120) ** 2 + (cols - 120) ** 2 < 15 ** 2, images.shape)
    values = np.linspace(0, 1, n_variants, dtype=np.float32)[:, None]
    sigmas = np.linspace(0, 3, n_sigmas)
    peak = peak_bytes(lambda: run_grid(images, labels, lambda n: values, sigmas, threads=1))
    assert_near(peak, grid_bytes(len(images), n_variants, n_sigmas, int(labels[0].sum()), images[0].size, threads=1))
