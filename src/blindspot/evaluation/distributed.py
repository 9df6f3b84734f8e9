"""The evaluation on a Dask cluster: the workers read and score the cases, the count tables merge in a tree.

:class:`CaseChunks` describes the test cases by what the workers need to read them (paths, a data
config, a checkpoint path; never the arrays) and is what :meth:`MapsFolder.cases
<blindspot.evaluation.sources.MapsFolder.cases>` and :meth:`OnData.cases
<blindspot.evaluation.sources.OnData.cases>` return when given a pool. :func:`~blindspot.evaluation.evaluate`
then runs the protocol's two passes as tasks on chunks of consecutive cases:

1. each chunk is read and post-processed on a worker (:func:`read_processed`); for a source the
   in-process evaluation keeps in memory, the processed chunk stays in that worker's memory for
   the second pass (a source read as a stream is read again, as in-process);
2. the threshold-free pass computes each case's row and count tables there (:func:`rank_case`) and
   the chunk's pooled table (exact, or binned); the pooled tables are merged on the workers in a
   tree, :data:`MERGE_FAN_IN` at a time (:meth:`blindspot.execution.Pool.tree_reduce`), and only
   the merged table comes back. Each case's row (and its tables, when the bootstrap or per-unit
   pooling needs them) comes back in case order, so per-unit tables, thresholds and intervals are
   computed here exactly as in-process;
3. the thresholded pass counts each case at the threshold and keeps each chunk's best and worst
   overlay candidates (:func:`threshold_cases`), merged here.

Validation cases (for a validation threshold) are read in this process, as in-process. Every number
equals the in-process evaluation's (``tests/test_execution.py``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.evaluation.cases import Case, validation_volumes
from blindspot.evaluation.options import EvaluationOptions
from blindspot.evaluation.protocol import _processed, _Run, rank_case, threshold_cases, threshold_result
from blindspot.metrics.accumulators import binned_table
from blindspot.metrics.tables import CountTable, merge_tables

__all__ = ["CaseChunks", "ClusterRun", "merge_some", "rank_part", "read_processed", "threshold_part"]

#: Cases per task (rounded up to a multiple of ``CaseChunks.align``).
CHUNK_CASES = 16
#: Chunk tables merged by one task of the merge tree (fewer levels, so fewer transfers between workers, than
#: pairs: ``benchmarks/cluster.md``).
MERGE_FAN_IN = 8


@dataclass(frozen=True)
class CaseChunks:
    """Test cases that the workers of ``pool`` read themselves, ``read(indices)`` giving a list of :class:`Case`.

    ``read`` must be picklable (a module-level function, or a partial of one) and read the same
    cases on every worker. ``in_memory``: the in-process evaluation would keep these cases in a
    list (processed chunks then stay on the workers between passes, and per-volume pooling sorts
    them by volume); otherwise it reads them as a stream. ``align``: chunks start at multiples of it
    (a model's batch size, so that every model call sees the images it sees in-process);
    ``torch_threads``: torch's threads for the tasks that read (the client's, for bitwise equal maps).
    """

    read: Callable[[Sequence[int]], list]
    names: list
    volumes: list
    has_labels: bool
    in_memory: bool
    description: str
    pool: object
    align: int = 1
    torch_threads: int | None = None
    order: tuple | None = None

    def __len__(self) -> int:
        return len(self.names) if self.order is None else len(self.order)

    def make_run(self, options: EvaluationOptions, n_overlays: int) -> "ClusterRun":
        return ClusterRun(self, options, n_overlays)

    def split_validation(self, fraction: float, seed: int) -> tuple["CaseChunks", list[Case]]:
        """Hold out ``fraction`` of the volumes as :func:`~blindspot.evaluation.split_validation` does: the
        test part stays on the cluster, the validation cases are read here."""
        order = list(range(len(self.names))) if self.order is None else list(self.order)
        chosen = validation_volumes([self.volumes[i] for i in order], fraction, seed)
        held = [i for i in order if self.volumes[i] in chosen]
        return replace(self, order=tuple(i for i in order if self.volumes[i] not in chosen)), self.read(held)


def read_processed(read: Callable, indices: Sequence[int], options: EvaluationOptions) -> list:
    """(checked case, post-processed map, score mask, signed) of the cases ``indices`` (a task)."""
    out = []
    for case in read(list(indices)):
        case = case.checked()
        signed = bool(case.map.dtype.kind in "if" and case.map.min() < 0)
        out.append((case, *_processed(case, options), signed))
    return out


def _source(source, options: EvaluationOptions) -> list:
    """A processed chunk: held on the worker (a list), or read now from ``(read, indices)``."""
    return source if isinstance(source, list) else read_processed(*source, options)


def rank_part(source, options: EvaluationOptions, pixel_level: bool, keep_tables: bool) -> dict:
    """The threshold-free pass over one chunk (a task): each case's :class:`Ranked`, the chunk's pooled table."""
    processed = _source(source, options)
    ranked, pooled = [], []
    for case, scores, mask, _ in processed:
        one = rank_case(case, scores, mask, options, pixel_level)
        if pixel_level:
            if options.accumulator == "binned":
                label = case.label if case.label is not None else np.zeros(scores.shape, bool)
                pooled.append(binned_table(label, scores, options.bits))
            else:
                pooled.append(one.table)
        ranked.append(one if keep_tables else replace(one, table=None))
    table = merge_tables(pooled) if any(len(t) for t in pooled) else None
    return {"ranked": ranked, "signed": [c.name for c, _, _, signed in processed if signed], "pooled": table}


def merge_some(*tables: CountTable | None) -> CountTable | None:
    """:func:`merge_tables` of a few chunk tables (a task of the merge tree; None: a chunk without pixels)."""
    present = [t for t in tables if t is not None and len(t)]
    return merge_tables(present) if present else None


def threshold_part(source, options: EvaluationOptions, threshold: float, n_overlays: int, first: int) -> dict:
    """The thresholded pass over one chunk (a task); ``first`` is the order of its first case."""
    processed = _source(source, options)
    return threshold_cases(((case, scores) for case, scores, _, _ in processed), threshold, options, n_overlays, first)


class ClusterRun(_Run):
    """The evaluation's passes over :class:`CaseChunks` as tasks (module docstring)."""

    def __init__(self, chunks: CaseChunks, options: EvaluationOptions, n_overlays: int, what: str = "test"):
        self.options, self.n_overlays, self.what = options, n_overlays, what
        self.notes: list[str] = []
        self.stream, self.cache = None, None
        self.signed: set[str] = set()
        self.chunks, self.pool = chunks, chunks.pool
        order = list(range(len(chunks.names))) if chunks.order is None else list(chunks.order)
        if not order:
            raise BlindspotError(f"there is no {what} case to evaluate" + (f" in {chunks.description}." if chunks.description
                                                                           else "."))
        if chunks.in_memory and options.pooling == "volume":  # as in-process: each volume's cases together (stable)
            order.sort(key=lambda i: chunks.volumes[i])
        size = -(-CHUNK_CASES // chunks.align) * chunks.align
        self.parts = [order[a : a + size] for a in range(0, len(order), size)]
        self.firsts = list(np.cumsum([0] + [len(p) for p in self.parts[:-1]]))
        self._held = None
        self._pooled = None

    @property
    def in_memory(self) -> bool:
        return self.chunks.in_memory

    def has_labels(self) -> bool:
        return self.chunks.has_labels

    def _sources(self) -> list:
        """Per chunk, what its tasks read: the future of the chunk held on a worker, or ``(read, indices)``."""
        if not self.chunks.in_memory:
            return [(self.chunks.read, part) for part in self.parts]
        if self._held is None:
            self._held = [self.pool.submit(read_processed, self.chunks.read, part, self.options, name="read-cases",
                                           torch_threads=self.chunks.torch_threads) for part in self.parts]
        return self._held

    def ranked(self, pixel_level: bool, keep_tables: bool):
        keep = keep_tables or self.options.pooling != "pooled"
        futures = [self.pool.submit(rank_part, source, self.options, pixel_level, keep, name="rank-cases",
                                    torch_threads=self.chunks.torch_threads) for source in self._sources()]
        rows = [self.pool.submit(operator.itemgetter("ranked", "signed"), future, name="case-rows") for future in futures]
        tables = [self.pool.submit(operator.itemgetter("pooled"), future, name="chunk-table") for future in futures]
        merged = self.pool.tree_reduce(tables, merge_some, fan_in=MERGE_FAN_IN, name="merge-tables") if pixel_level else None
        sizes = [len(part) for part in self.parts]
        results = self.pool.results(rows, desc=f"{self.what} cases, metrics", unit="case", weight=lambda i: sizes[i])
        del futures
        if merged is not None:
            self._pooled = self.pool.result(merged)
        for ranked, signed in results:
            self.signed.update(signed)
            yield from ranked

    def pooled_table(self) -> CountTable:
        if self._pooled is None:
            raise BlindspotError("there is no pixel to evaluate in the test cases.")
        return self._pooled

    def threshold_pass(self, threshold: float) -> dict:
        futures = [self.pool.submit(threshold_part, source, self.options, threshold, self.n_overlays, int(first),
                                    name="threshold-cases", torch_threads=self.chunks.torch_threads)
                   for source, first in zip(self._sources(), self.firsts)]
        sizes = [len(part) for part in self.parts]
        parts = self.pool.results(futures, desc=f"{self.what} cases, threshold", unit="case", weight=lambda i: sizes[i])
        self._held = None  # the processed chunks are no longer needed on the workers
        return threshold_result(parts[0], parts[1:], self.n_overlays)
