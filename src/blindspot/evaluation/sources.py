"""Where evaluation cases come from: a folder of maps, or maps computed on a data set.

* :func:`maps_cases`: anomaly maps from any method, paired by file name with labels, masks, images.
* :func:`data_cases`: a data set (:class:`~blindspot.data.DataConfig`) and a map maker — a trained
  model (:func:`model_maps`) or a training-free baseline (:func:`baseline_maps`). A source without
  labels (the embedded template, healthy NIfTI volumes) is tested on the one synthetic test set
  (:func:`blindspot.anomalies.synthetic_test_set`), like the latent sweep.

A model is evaluated on images prepared exactly like its training images: its checkpoint's
preparation is the default, and an explicit, different preparation is an error naming both values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from blindspot.anomalies import synthetic_test_set
from blindspot.baselines import BASELINES, ZScore
from blindspot.data import DataConfig, ImageSet, iter_volumes, load, refuse_overlap, resolve, volumes_from_names
from blindspot.data.brats import brats_volume, list_subjects
from blindspot.data.nifti import split_files
from blindspot.data.io import index_by_stem, is_nifti, read_array
from blindspot.errors import BlindspotError
from blindspot.evaluation.cases import Case, CaseStream
from blindspot.evaluation.distributed import CaseChunks
from blindspot.evaluation.options import EvaluationOptions, reads_masks
from blindspot.results import file_sha256

__all__ = ["MapMaker", "MapsFolder", "OnData", "baseline_maps", "image_cases", "maps_cases", "model_maps", "test_images",
           "volume_cases"]


@dataclass(frozen=True)
class MapMaker:
    """Anomaly maps ``(N, H, W)`` of images ``(N, H, W)``, and what they are (recorded in ``config.json``)."""

    make: Callable[[np.ndarray], np.ndarray]
    record: dict
    preparation: dict | None = None  # the preparation the images need (a model's; None: any)


# --------------------------------------------------------------------------------------------
# maps from a folder


def _as_case_array(array: np.ndarray, path: Path, axis: int | None) -> np.ndarray:
    """Volumes get their slice axis first (default: 2 for NIfTI, 0 for .npy)."""
    if array.ndim == 2:
        return array
    if axis is None:
        axis = 2 if is_nifti(path) else 0
    return np.moveaxis(array, axis, 0)


def map_specs(maps: str | Path, labels: str | Path | None, *, masks: str | Path | None = None,
              images: str | Path | None = None, axis: int | None = None, volume_regex: str | None = None) -> list[tuple]:
    """What :func:`read_map_case` needs of each case of a maps folder (paths, axis, volume), pairing checked first."""
    map_files = index_by_stem(maps, "maps")
    label_files = index_by_stem(labels, "labels") if labels is not None else None
    others = {"mask": index_by_stem(masks, "masks") if masks is not None else None,
              "image": index_by_stem(images, "images") if images is not None else None}
    if label_files is not None:
        for key in map_files:
            if key not in label_files:
                raise BlindspotError(f"map '{map_files[key]}' has no label file named '{key}.*' in '{labels}'.")
        for key in label_files:
            if key not in map_files:
                raise BlindspotError(f"label '{label_files[key]}' has no map file named '{key}.*' in '{maps}'.")
    for what, index in others.items():
        if index is not None:
            missing = [k for k in map_files if k not in index]
            if missing:
                raise BlindspotError(f"map '{map_files[missing[0]]}' has no {what} file named '{missing[0]}.*'.")
    keys = list(map_files)
    volumes = volumes_from_names(keys, volume_regex) if volume_regex else keys
    pick = lambda index, key: None if index is None else index[key]  # noqa: E731
    return [(map_files[key], pick(label_files, key), pick(others["mask"], key), pick(others["image"], key), axis, volume,
             label_files is not None) for key, volume in zip(keys, volumes)]


def read_map_case(spec: tuple) -> Case:
    """The case of one :func:`map_specs` entry: its map, and its label, mask and image when there are."""
    path, label_path, mask_path, image_path, axis, volume, labelled = spec
    scores = read_array(path)
    arrays = {"map": _as_case_array(scores, path, axis)}
    for what, other_path in (("label", label_path), ("brain", mask_path), ("image", image_path)):
        if other_path is None:
            continue
        other = read_array(other_path)
        if other.shape != scores.shape:
            raise BlindspotError(f"{'mask' if what == 'brain' else what} '{other_path}' has shape {other.shape} "
                                 f"but map '{path}' has {scores.shape}.")
        arrays[what] = _as_case_array(other > 0 if what in ("label", "brain") else other, other_path, axis)
    return Case(name=path.name, volume=volume, anomalous=None if labelled else False, **arrays)


def read_map_cases(specs: Sequence[tuple], indices: Sequence[int]) -> list[Case]:
    """The cases ``indices`` of a maps folder (a task on a Dask worker reads them there)."""
    return [read_map_case(specs[i]) for i in indices]


def maps_cases(maps: str | Path, labels: str | Path | None, *, masks: str | Path | None = None,
               images: str | Path | None = None, axis: int | None = None, volume_regex: str | None = None,
               stream: bool = False, pool=None) -> list[Case] | CaseStream | CaseChunks:
    """Cases from a folder of maps (NIfTI, ``.npy`` or images), paired by file name with labels, masks, images.

    Every map needs a label file with the same name without extension (binarised > 0) and every
    label a map (``labels=None``: healthy maps, e.g. for a false-positive-rate threshold); masks and
    images are optional but, when given, needed for every map. Volumes get their slice axis first
    (``axis``: default 2 for NIfTI, 0 for ``.npy``). Pairing is checked before any array is read;
    with ``stream=True`` arrays are read one case at a time. With ``pool`` (a
    :class:`blindspot.execution.Pool`) the workers read the files (:class:`CaseChunks`).
    """
    specs = map_specs(maps, labels, masks=masks, images=images, axis=axis, volume_regex=volume_regex)
    if pool is not None:
        return CaseChunks(partial(read_map_cases, specs), [spec[0].name for spec in specs], [spec[5] for spec in specs],
                          has_labels=labels is not None, in_memory=not stream, description=f"maps folder '{maps}'",
                          pool=pool)
    if stream:
        return CaseStream(lambda: (read_map_case(spec) for spec in specs), has_labels=labels is not None,
                          description=f"maps folder '{maps}'", count=len(specs))
    return [read_map_case(spec) for spec in specs]


def maps_files(*folders: str | Path | None) -> list[str]:
    """Every file a maps evaluation reads (for the record and the overlap check)."""
    return [str(p) for folder in folders if folder is not None for p in index_by_stem(folder, "input").values()]


# --------------------------------------------------------------------------------------------
# maps computed on a data set


def model_maps(model, *, positive: bool = False, batch_size: int = 64, device=None, description: str = "the model") -> MapMaker:
    """Maps of a reconstruction model: its loss's residual in [0, 1] units (:func:`blindspot.models.inference.anomaly_maps`)."""
    from blindspot.models.inference import anomaly_maps, residual_kind

    record = {"model": getattr(model, "config", None), "residual": residual_kind(model), "positive": positive,
              "input_range": list(getattr(model, "input_range", (0.0, 1.0))), "description": description}
    return MapMaker(lambda images: anomaly_maps(model, images, positive=positive, batch_size=batch_size, device=device,
                                                desc="model maps"),
                    record, getattr(model, "preparation", None))


def _signed_to_map(signed: np.ndarray, positive: bool) -> np.ndarray:
    """|s|, or max(s, 0) with the positive-residual option."""
    return np.maximum(signed, 0) if positive else np.abs(signed)


def baseline_maps(name: str, *, positive: bool = False, train: ImageSet | None = None) -> MapMaker:
    """Maps of a training-free baseline (:mod:`blindspot.baselines`); ``zscore`` needs healthy ``train`` images."""
    if name not in BASELINES:
        raise BlindspotError(f"`baseline` must be one of {', '.join(BASELINES)}; got '{name}'.")
    if name == "image":
        return MapMaker(lambda images: _signed_to_map(np.asarray(images, np.float32), positive), {"baseline": "image"})
    if train is None:
        raise BlindspotError("the zscore baseline needs healthy training images; give `train_data`.")
    zscore = ZScore.fit(train.images)
    record = {"baseline": "zscore", "train_data": train.source, "n_train_images": zscore.n_images, "min_std": zscore.min_std}
    return MapMaker(lambda images: _signed_to_map(zscore.maps(images), positive), record)


def test_images(config: DataConfig, *, seed: int = 0) -> ImageSet:
    """The labelled test images of a data set: its own labels, or the synthetic test set when it has none."""
    imageset = load(config, default_split="test")
    if imageset.labels is None and imageset.anomalous is None:
        imageset = synthetic_test_set(imageset, seed=seed)
    return imageset


def image_cases(data: ImageSet, maker: MapMaker) -> list[Case]:
    """One case per image of ``data``, with the maker's maps (images without any label count as normal)."""
    maps = maker.make(data.images)
    labels, brain, flags = data.labels, data.brain, data.anomalous
    if flags is None and labels is None:  # unlabelled images are healthy (e.g. validation images for an FPR threshold)
        flags = np.zeros(len(data), bool)
    return [Case(name, maps[k], None if labels is None else labels[k], None if brain is None else brain[k],
                 data.images[k], data.volumes[k], None if flags is None else bool(flags[k]))
            for k, name in enumerate(data.names)]


def volume_cases(config: DataConfig, maker: MapMaker) -> CaseStream:
    """BraTS subjects as 3-D cases, read and mapped one at a time."""
    iter_volumes(config)  # checks the layout and the subject list now

    def generate() -> Iterator[Case]:
        for volume in iter_volumes(config):
            yield Case(volume.name, maker.make(volume.image), volume.labels, volume.brain, volume.image, volume.name)

    return CaseStream(generate, has_labels=True, description=f"subjects of '{config.data}'")


# --------------------------------------------------------------------------------------------
# the two kinds of source of ``blindspot evaluate``


@dataclass(frozen=True)
class MapsFolder:
    """Maps from any method in a folder (``--maps``), with labels, masks and images paired by name,
    and optional validation maps (``--val-maps``)."""

    maps: str
    labels: str | None
    masks: str | None = None
    images: str | None = None
    val_maps: str | None = None
    val_labels: str | None = None
    val_masks: str | None = None
    axis: int | None = None
    volume_regex: str | None = None
    stream: bool = False

    def inputs(self) -> list[str | None]:
        return [self.maps, self.labels, self.masks, self.images, self.val_maps, self.val_labels, self.val_masks]

    def check(self, options: EvaluationOptions) -> None:
        """Refuse masks the protocol of ``options`` never reads: given alone, they would change nothing."""
        for flag, given, validation in (("masks", self.masks, False), ("val_masks", self.val_masks, True)):
            if given is not None and not reads_masks(options, validation=validation):
                raise BlindspotError(f"`{flag}` change nothing here: brain masks act only with `mask_erosion` (masking), "
                                     f"{'' if validation else '`image_score` mask-mean or '}`threshold` fpr; add one, "
                                     f"or omit `{flag}`.")

    def cases(self, seed: int, pool=None):
        """``(cases, validation cases or None, record)``; with ``pool`` the test cases are read by its workers."""
        if self.labels is None:
            raise BlindspotError("`maps` needs `labels`: a folder with one label file per map (same name).")
        if self.val_maps is None and (self.val_labels or self.val_masks):
            raise BlindspotError("`val_labels` and `val_masks` need `val_maps`.")
        common = dict(axis=self.axis, volume_regex=self.volume_regex, stream=self.stream)
        cases = maps_cases(self.maps, self.labels, masks=self.masks, images=self.images, **common, pool=pool)
        files = maps_files(self.maps, self.labels, self.masks, self.images)
        record = {"kind": "maps", "maps": self.maps, "labels": self.labels, "masks": self.masks, "images": self.images,
                  "description": f"maps in `{self.maps}`", "files": files}
        validation = None
        if self.val_maps is not None:
            val_files = maps_files(self.val_maps)
            same = set(map(file_sha256, val_files)) & set(map(file_sha256, maps_files(self.maps)))
            if same:
                raise BlindspotError(f"`val_maps` '{self.val_maps}' holds maps identical to test maps in '{self.maps}'; "
                                     "a validation split must be separate images.")
            validation = maps_cases(self.val_maps, self.val_labels, masks=self.val_masks, **common)
            record["validation"] = {"maps": self.val_maps, "labels": self.val_labels, "masks": self.val_masks}
            record["files"] = files + val_files + maps_files(self.val_labels, self.val_masks)
        return cases, validation, record


@dataclass(frozen=True)
class OnData:
    """Maps computed on a data set (``--data``) by a trained model (``--checkpoint``) or a baseline."""

    data: DataConfig
    checkpoint: str | None = None
    baseline: str | None = None
    val_data: DataConfig | None = None
    train_data: DataConfig | None = None
    volumes: bool = False
    batch_size: int = 64
    device: str | None = None

    def inputs(self) -> list[str | None]:
        return [self.checkpoint, *(c.data for c in (self.data, self.val_data, self.train_data) if c is not None)]

    def cases(self, seed: int, positive: bool, pool=None):
        """``(cases, validation cases or None, record)``; with ``pool`` the workers read the test images (or
        subjects) and compute their maps (:func:`data_cases`, :func:`subject_cases`)."""
        if (self.checkpoint is None) == (self.baseline is None):
            raise BlindspotError("give exactly one of `checkpoint` and `baseline` to compute maps on `data`.")
        data, val_data = self.data, self.val_data
        if self.checkpoint is not None:
            from blindspot.models.checkpoint import load_model

            here = self.device if pool is None or _usable(self.device) else "cpu"  # the workers may have the GPUs
            model = load_model(self.checkpoint, device=here)
            maker = model_maps(model, positive=positive, batch_size=self.batch_size, device=here,
                               description=f"checkpoint `{self.checkpoint}`")
            data = data.prepared_like(maker.preparation, what=f"'{self.checkpoint}'")
            val_data = val_data and val_data.prepared_like(maker.preparation, what=f"'{self.checkpoint}'")
        test = None if self.volumes else test_images(data, seed=seed)
        if self.baseline is not None:
            train = None
            if self.baseline == "zscore":
                train = load(self.train_data or replace(data, split=None), default_split="train").normal()
                if test is not None:
                    refuse_overlap(train, test, "zscore training images and the test images")
            maker = baseline_maps(self.baseline, positive=positive, train=train)
        if pool is not None:
            cases = self._chunks(pool, data, test, maker, seed, positive)
        else:
            cases = volume_cases(data, maker) if self.volumes else image_cases(test, maker)
        resolved = test.source["config"] if test is not None else resolve(data, default_split="test").record()
        record = {"kind": "checkpoint" if self.checkpoint else "baseline", **maker.record, "data": resolved,
                  "description": f"{maker.record.get('description', f'the {self.baseline} baseline')} on `{data.data}`",
                  "files": [] if test is None else list(test.source.get("files", []))}
        if self.checkpoint:
            record["files"] = [self.checkpoint, *record["files"]]
        if test is not None and "test_set" in test.source:
            record["test_set"] = test.source["test_set"]
        validation = None
        if val_data is not None:
            val_set = load(val_data, default_split="test")
            if test is not None:
                refuse_overlap(val_set, test, "validation images and the test images")
            validation = image_cases(val_set, maker)
            record["validation"] = val_set.source
            record["files"] += list(val_set.source.get("files", []))
        return cases, validation, record

    def _chunks(self, pool, data: DataConfig, test: ImageSet | None, maker: MapMaker, seed: int, positive: bool) -> CaseChunks:
        """The test cases as :class:`CaseChunks`: the workers read the data and compute the maps themselves."""
        import torch

        maker_spec = (("checkpoint", self.checkpoint, positive, self.batch_size, self.device, maker.record["description"])
                      if self.checkpoint is not None else ("maker", maker))
        threads = torch.get_num_threads()  # model passes on the workers use this process's threads: bitwise the same maps
        if self.volumes:
            config = resolve(data, default_split="test")
            iter_volumes(config)  # checks the layout and the subject list now
            names = [name for name, _, _ in split_files(list_subjects(config.data, config.modality), config.split)]
            return CaseChunks(partial(subject_cases, config, maker_spec), names, names, has_labels=True, in_memory=False,
                              description=f"subjects of '{config.data}'", pool=pool, torch_threads=threads)
        return CaseChunks(partial(data_cases, data, seed, _images_key(test.images), maker_spec), list(test.names),
                          list(test.volumes), has_labels=test.labels is not None, in_memory=True,
                          description=f"test images of '{data.data}'", pool=pool,
                          align=self.batch_size if self.checkpoint is not None else 1, torch_threads=threads)


# --------------------------------------------------------------------------------------------
# what the workers of a cluster read (blindspot.evaluation.distributed)

_WORKER_CACHE: dict = {}  # in a worker: the last test set and model read


def _usable(device) -> bool:
    """Whether ``device`` exists on this machine (a client without a GPU still reads the checkpoint, on the CPU)."""
    from blindspot.models.device import select_device

    try:
        select_device(device)
    except BlindspotError:
        return False
    return True


def _images_key(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images)).hexdigest()


def _worker_maker(spec: tuple) -> MapMaker:
    if spec[0] == "maker":
        return spec[1]
    _, checkpoint, positive, batch_size, device, description = spec
    key = ("model", checkpoint, str(device))
    if _WORKER_CACHE.get("model_key") != key:
        from blindspot.models.checkpoint import load_model

        _WORKER_CACHE.update(model_key=key, model=load_model(checkpoint, device=device))
    return model_maps(_WORKER_CACHE["model"], positive=positive, batch_size=batch_size, device=device, description=description)


def data_cases(data: DataConfig, seed: int, key: str, maker_spec: tuple, indices: Sequence[int]) -> list[Case]:
    """The cases ``indices`` of the test images of ``data`` with their maps (a task): the images read on the
    worker, and checked to be the ones the client read (``key``)."""
    test_key = (json.dumps(data.record(), sort_keys=True), seed)
    if _WORKER_CACHE.get("test_key") != test_key:
        test = test_images(data, seed=seed)
        if _images_key(test.images) != key:
            raise BlindspotError(f"a worker read other test images from '{data.data}' than this process; every worker must "
                                 "read the same data (the same paths and files).")
        _WORKER_CACHE.update(test_key=test_key, test=test)
    return image_cases(_WORKER_CACHE["test"].subset(list(indices)), _worker_maker(maker_spec))


def subject_cases(config: DataConfig, maker_spec: tuple, indices: Sequence[int]) -> list[Case]:
    """BraTS subjects ``indices`` of ``config``'s split as 3-D cases with their maps (a task)."""
    subjects = split_files(list_subjects(config.data, config.modality), config.split)
    maker = _worker_maker(maker_spec)
    cases = []
    for i in indices:
        volume = brats_volume(subjects[i], axis=config.axis, preparation=config.preparation)
        cases.append(Case(volume.name, maker.make(volume.image), volume.labels, volume.brain, volume.image, volume.name))
    return cases
