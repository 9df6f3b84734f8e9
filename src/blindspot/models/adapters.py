"""Model adapters: one interface for every kind of model an audit (or any inference) runs.

An adapter turns a batch of images ``(B, 1, H, W)`` (float32, in the model's input range) into
reconstructions of the same shape, in the same range. :func:`blindspot.models.inference.reconstruct`
is the one inference path: it takes an adapter (or a ``torch.nn.Module``, wrapped in a
:class:`TorchAdapter`), maps images in [0, 1] onto the adapter's ``input_range``, batches them, checks
every output (shape, finite values) and maps the reconstructions back to [0, 1] units.

:func:`load_adapter` picks the adapter from what the user names (``--model``):

==============================  ==========================================================================
``run/best_ap.pt``              a blindspot checkpoint (read with ``torch.load(weights_only=True)``); it
                                carries its input range, preparation and input size
a TorchScript file              ``torch.jit.load`` (a TorchScript archive is not a pickle)
``model.onnx``                  ``onnxruntime``: the CPU provider, CUDA when available; a fixed input size
                                in the file becomes the model's size, a fixed batch size is respected
``package.module:function``     a factory returning a ``torch.nn.Module`` or a callable (called on a
                                float32 tensor); ``weights`` loads a state dict with ``weights_only=True``
==============================  ==========================================================================

A data file is never executed: the only code that runs is the factory the user names explicitly
(imported with the working directory on ``sys.path``). :class:`ReconstructionFolder` reads
precomputed reconstructions of the normal images instead of running a model (file names from
:func:`reconstruction_key`).

Errors name the file or parameter in one sentence (``model``, ``weights``, ``input_range``,
``reconstructions``); a model that fails on a batch, returns another shape or non-finite values
raises a :class:`~blindspot.errors.BlindspotError` from :func:`~blindspot.models.inference.reconstruct`.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blindspot.data.io import IMAGE_SUFFIXES, image_units, index_by_stem, read_array, stem
from blindspot.errors import BlindspotError
from blindspot.models.checkpoint import exported_kind, load_checkpoint, load_model
from blindspot.models.device import select_device
from blindspot.wording import a_type

__all__ = [
    "Adapter",
    "OnnxAdapter",
    "ReconstructionFolder",
    "TorchAdapter",
    "as_adapter",
    "load_adapter",
    "parse_input_range",
    "reconstruction_key",
]

#: Kinds of model an adapter wraps (recorded in results).
KINDS = ("checkpoint", "torchscript", "onnx", "factory", "module")

#: How far (a share of the input range's width) float reconstructions may overshoot the range, as a decoder
#: without a final sigmoid does; 0–255 values for a model in [0, 1] lie far beyond it.
RANGE_SLACK = 0.1

_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _one_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, shortened: error messages of foreign code stay one sentence."""
    text = str(err).strip().splitlines()
    first = text[0].strip() if text else ""
    if len(first) > limit:
        first = first[: limit - 1] + "…"
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def parse_input_range(value: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``"A,B"`` (or a pair) as ``(A, B)`` with finite A < B; None stays None.

    >>> parse_input_range("-1,1")
    (-1.0, 1.0)
    """
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise BlindspotError(f"`input_range` must be two numbers A,B (e.g. 0,1 or -1,1); got {value!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise BlindspotError(f"`input_range` must be finite numbers A,B with A < B; got {value!r}.")
    return low, high


# --------------------------------------------------------------------------------------------
# the interface


class Adapter:
    """A model behind the one interface: a batch ``(B, 1, H, W)`` in ``input_range`` → reconstructions, same shape.

    Attributes
    ----------
    spec : str
        How the model was named (a path or ``package.module:function``); errors and results use it.
    kind : str
        One of :data:`KINDS`.
    input_range : (float, float)
        The value range the model takes its inputs in (and returns its reconstructions in).
    preparation : dict or None
        How the model's training images were prepared (a blindspot checkpoint's), else None.
    size : int or None
        The input height = width the model requires, when it declares one.
    fixed_batch : int or None
        A batch size the model requires (an ONNX file with a fixed batch axis): the inference
        loop then feeds batches of exactly that size, padding the last one.
    calls, images : int
        Model calls made and images reconstructed so far (for benchmarks).
    """

    kind = "module"

    def __init__(self, spec: str, *, input_range: Sequence[float] = (0.0, 1.0), preparation: dict | None = None,
                 size: int | None = None, fixed_batch: int | None = None, record: dict | None = None) -> None:
        self.spec = str(spec)
        self.input_range = parse_input_range(input_range)
        self.preparation = preparation
        self.size = size
        self.fixed_batch = fixed_batch
        self.calls = 0
        self.images = 0
        self._record = dict(record or {})

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Reconstruct ``batch`` ``(B, 1, H, W)`` float32 in ``input_range``; counts the call."""
        self.calls += 1
        self.images += len(batch)
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> Any:  # pragma: no cover - every adapter overrides it
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self, device: str | torch.device | None = None) -> Iterator[None]:
        """Prepare the model for a run on ``device`` (None: where it is) and restore its state afterwards."""
        yield

    def record(self) -> dict:
        """What results record about the model (JSON-ready)."""
        return {"spec": self.spec, "kind": self.kind, "input_range": list(self.input_range), "size": self.size,
                "preparation": self.preparation, **self._record}

    def describe(self) -> str:
        return f"the {self.kind} model '{self.spec}'"


class TorchAdapter(Adapter):
    """A ``torch.nn.Module`` (or a callable on tensors): the blindspot zoo, TorchScript, a factory's network.

    The module runs in eval mode under ``torch.no_grad()`` on the device of :meth:`running` (None
    keeps it where it is: the device of its first parameter, else the CPU); its train/eval mode is
    restored afterwards. With ``wrap_errors`` an exception raised by the model becomes a
    BlindspotError naming the model and the batch shape (for foreign networks; the zoo's own
    errors already are).
    """

    def __init__(self, module: torch.nn.Module | Callable, spec: str | None = None, *, kind: str = "module",
                 input_range: Sequence[float] | None = None, preparation: dict | None = None, size: int | None = None,
                 wrap_errors: bool = False, record: dict | None = None) -> None:
        if input_range is None:
            input_range = getattr(module, "input_range", (0.0, 1.0))
        if size is None and isinstance(getattr(module, "size", None), int) and not isinstance(module.size, bool):
            size = module.size
        super().__init__(spec or type(module).__name__, input_range=input_range,
                         preparation=preparation if preparation is not None else getattr(module, "preparation", None),
                         size=size, record=record)
        self.kind = kind
        self.module = module
        self.wrap_errors = wrap_errors
        self._device = torch.device("cpu")

    @contextlib.contextmanager
    def running(self, device: str | torch.device | None = None) -> Iterator[None]:

        module = self.module
        is_module = isinstance(module, torch.nn.Module)
        if device is None:  # keep the model where it is (a module without parameters, e.g. a fixed filter: the CPU)
            params = module.parameters() if is_module else iter(())
            self._device = next((p.device for p in params), torch.device("cpu"))
        else:
            self._device = select_device(device)
            if is_module:
                module.to(self._device)
        was_training = module.training if is_module else False
        if is_module:
            module.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            if is_module:
                module.train(was_training)

    def _run(self, batch: np.ndarray) -> Any:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device)
        if not self.wrap_errors:
            return _to_numpy(self.module(x), self)
        try:
            out = self.module(x)
        except BlindspotError:
            raise
        except Exception as err:  # a foreign network: any error becomes one sentence
            raise BlindspotError(f"{self.describe()} failed on a batch of shape {tuple(batch.shape)} ({_one_line(err)}).") from None
        return _to_numpy(out, self)


def _to_numpy(out: Any, adapter: Adapter) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy()
    if isinstance(out, np.ndarray):
        return out
    raise BlindspotError(f"{adapter.describe()} returned {a_type(out)}; it must return the reconstruction, "
                         "one tensor of the input's shape (B, 1, H, W) (wrap the network so that it does).")


def as_adapter(model) -> Adapter:
    """``model`` as an :class:`Adapter`: an adapter as it is, a module or a callable wrapped in a :class:`TorchAdapter`."""
    if isinstance(model, Adapter):
        return model
    if isinstance(model, torch.nn.Module) or callable(model):
        return TorchAdapter(model)
    raise BlindspotError(f"`model` must be a torch.nn.Module, a callable or an Adapter; got {type(model).__name__}.")


# --------------------------------------------------------------------------------------------
# ONNX


class OnnxAdapter(Adapter):
    """An ONNX file run by ``onnxruntime`` (its first input and first output).

    The CPU execution provider by default, CUDA when ``device`` asks for it or, with no device,
    when the installed onnxruntime has it. A fixed height and width in the file's input become the
    model's ``size``; a fixed batch dimension its ``fixed_batch``.
    """

    kind = "onnx"
    _TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}

    def __init__(self, path: str | Path, *, input_range: Sequence[float] = (0.0, 1.0), device: str | None = None,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:  # pragma: no cover - a dependency of blindspot
            raise BlindspotError("ONNX models need the onnxruntime package: pip install onnxruntime.") from None
        self._ort = onnxruntime
        self.path = Path(path)
        self.threads = threads
        self._providers: list[str] = []
        self._session = self._open(device)
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise BlindspotError(f"`model` '{path}' has {len(inputs)} inputs ({names}); an audited model takes one batch of images.")
        first = inputs[0]
        if first.type not in self._TYPES:
            raise BlindspotError(f"`model` '{path}' takes {first.type} inputs; blindspot feeds float images (tensor(float)).")
        shape = list(first.shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 1):
            raise BlindspotError(f"`model` '{path}' takes inputs of shape {shape}; blindspot feeds one-channel batches "
                                 "(B, 1, H, W).")
        height, width = shape[2], shape[3]
        size = None
        if isinstance(height, int) and isinstance(width, int):
            if height != width:
                raise BlindspotError(f"`model` '{path}' takes {height}×{width} inputs; blindspot prepares square images.")
            size = height
        fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self._input, self._dtype = first.name, self._TYPES[first.type]
        super().__init__(str(path), input_range=input_range, size=size, fixed_batch=fixed,
                         record={"input": {"name": first.name, "shape": [d if isinstance(d, int) else str(d) for d in shape]},
                                 "onnxruntime": onnxruntime.__version__})

    def _open(self, device):
        available = self._ort.get_available_providers()
        kind = None if device is None else str(device).split(":")[0]
        if kind not in (None, "cpu", "cuda"):
            raise BlindspotError(f"`device` {device} does not apply to ONNX models; use cpu or cuda.")
        if kind == "cuda" and "CUDAExecutionProvider" not in available:
            raise BlindspotError(f"`device` {device}: the installed onnxruntime has no CUDA provider (it has "
                                 f"{', '.join(available)}); install onnxruntime-gpu or use cpu.")
        use_cuda = kind == "cuda" or (kind is None and "CUDAExecutionProvider" in available)
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        options = self._ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings would print over the progress
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        try:
            session = self._ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for unreadable or invalid files
            raise BlindspotError(f"`model` '{self.path}' is not a loadable ONNX model ({_one_line(err)}).") from None
        self._providers = providers
        return session

    @contextlib.contextmanager
    def running(self, device: str | torch.device | None = None) -> Iterator[None]:
        if device is not None:
            wanted = "CUDAExecutionProvider" if str(device).startswith("cuda") else "CPUExecutionProvider"
            if self._providers[0] != wanted:
                self._session = self._open(str(device))
        yield

    def _run(self, batch: np.ndarray) -> Any:
        try:
            return self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=self._dtype)})[0]
        except Exception as err:  # onnxruntime's InvalidArgument, Fail, RuntimeException ...
            raise BlindspotError(f"{self.describe()} rejects a batch of shape {tuple(batch.shape)} ({_one_line(err)}); "
                                 "export it with a dynamic batch axis and the input size the images are prepared at "
                                 "(`size`).") from None

    def record(self) -> dict:
        return {**super().record(), "providers": list(self._providers)}


# --------------------------------------------------------------------------------------------
# loading what the user names


def _checkpoint(path: Path, input_range, device) -> TorchAdapter:

    try:
        load_checkpoint(path)
    except BlindspotError as err:
        if "is not a blindspot checkpoint" in str(err):
            raise BlindspotError(f"`model` '{path}' is not a blindspot checkpoint, TorchScript or ONNX file; for a state "
                                 "dict name the network's factory: `model` package.module:function with `weights` "
                                 f"'{path}'.") from None
        raise
    model = load_model(path, device=device or "cpu")
    if input_range is not None and tuple(input_range) != tuple(model.input_range):
        raise BlindspotError(f"`input_range` {input_range[0]:g},{input_range[1]:g} conflicts with the input range the "
                             f"checkpoint '{path}' was trained in ({model.input_range[0]:g},{model.input_range[1]:g}); "
                             "omit it.")
    return TorchAdapter(model, str(path), kind="checkpoint", input_range=model.input_range, preparation=model.preparation,
                        size=model.size, record={"model": dict(model.config)})


def _torchscript(path: Path, input_range, device) -> TorchAdapter:
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.10, and still what many exports are
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # torch raises RuntimeError and others for damaged archives
        raise BlindspotError(f"`model` '{path}' is not a loadable TorchScript file ({_one_line(err)}).") from None
    return TorchAdapter(module, str(path), kind="torchscript", input_range=input_range or (0.0, 1.0), wrap_errors=True)


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """The working directory on ``sys.path`` while a factory is imported (as ``python -m`` has it)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _factory(spec: str, weights: str | Path | None, input_range) -> TorchAdapter:
    module_name, _, attribute = spec.partition(":")
    with _cwd_importable():
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # ImportError, SyntaxError or anything the module raises when imported
            raise BlindspotError(f"`model` factory '{spec}': cannot import '{module_name}' ({_one_line(err)}).") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise BlindspotError(f"`model` factory '{spec}': '{module_name}' has no attribute '{attribute}'.")
        target = getattr(target, part)
    if not callable(target):
        raise BlindspotError(f"`model` factory '{spec}' is {a_type(target)}, not a function to call.")
    try:
        with _cwd_importable():  # the factory may import more of the user's modules
            built = target()
    except Exception as err:  # the user's code
        raise BlindspotError(f"`model` factory '{spec}' raised {_one_line(err)}.") from None
    if isinstance(built, torch.nn.Module):
        record = {"class": f"{type(built).__module__}.{type(built).__qualname__}"}
        source = getattr(module, "__file__", None)
        if source:
            record["source"] = source
        if weights is not None:
            _load_weights(built, Path(weights), spec)
            record["weights"] = str(weights)
        elif any(p.numel() for p in built.parameters()):
            record["note"] = (f"no `weights` were given: the network of '{spec}' runs with the weights its factory built, "
                              "random unless the factory loads trained ones itself.")
            warnings.warn(record["note"], UserWarning, stacklevel=4)
        return TorchAdapter(built, spec, kind="factory", input_range=input_range or (0.0, 1.0), wrap_errors=True,
                            record=record)
    if callable(built) and not isinstance(built, type):
        if weights is not None:
            raise BlindspotError(f"`weights` applies to a factory that returns a torch.nn.Module; '{spec}' returned a "
                                 f"{type(built).__name__}.")
        return TorchAdapter(built, spec, kind="factory", input_range=input_range or (0.0, 1.0), wrap_errors=True,
                            record={"class": type(built).__qualname__})
    raise BlindspotError(f"`model` factory '{spec}' returned {a_type(built)}; it must return a torch.nn.Module "
                         "or a callable taking a batch tensor (B, 1, H, W).")


def _load_weights(module: torch.nn.Module, path: Path, spec: str) -> None:
    """A state dict from ``path`` (``weights_only=True``: no code runs) into ``module``, strictly."""
    if not path.is_file():
        raise BlindspotError(f"`weights` '{path}' does not exist or is not a file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged, foreign or pickled-code files
        raise BlindspotError(f"`weights` '{path}' is not a readable state dict ({_one_line(err)}).") from None
    if not (isinstance(state, Mapping) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise BlindspotError(f"`weights` '{path}' holds {a_type(state)}, not a state dict (names → tensors).")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that do not fit
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise BlindspotError(f"`weights` '{path}' do not fit the network of '{spec}' ({lines[-1] if lines else err}).") from None
    if result.missing_keys or result.unexpected_keys:
        parts = [f"{len(keys)} {what} (e.g. '{keys[0]}')" for what, keys in
                 (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)) if keys]
        raise BlindspotError(f"`weights` '{path}' do not fit the network of '{spec}': {' and '.join(parts)} entries.")


def load_adapter(spec: str | Path, *, weights: str | Path | None = None, input_range: Sequence[float] | str | None = None,
                 device: str | None = None, threads: int | None = None) -> Adapter:
    """The adapter of the model named by ``spec`` (a file or ``package.module:function``; module docstring).

    Parameters
    ----------
    spec : str or Path
        A blindspot checkpoint, a TorchScript file, an ``.onnx`` file, or a factory
        ``package.module:function`` (imported with the working directory on ``sys.path``).
    weights : path, optional
        A state dict for the factory's network (``torch.load(weights_only=True)``, loaded strictly).
    input_range : (A, B) or "A,B", optional
        The range the model takes its inputs in; default (0, 1), or the checkpoint's own (another
        value for a checkpoint is an error).
    device : str, optional
        Where the model runs (None: CUDA when available, else the CPU for ONNX; the checkpoint's
        model is loaded on the CPU and moved at run time).
    threads : int, optional
        Intra-op threads of an ONNX session.
    """
    input_range = parse_input_range(input_range)
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        raise BlindspotError(f"`model` '{text}' is a folder; expected a checkpoint (.pt), a TorchScript or ONNX file, or "
                             "package.module:function (precomputed reconstructions go to `reconstructions`).")
    if path.is_file():
        if weights is not None:
            raise BlindspotError(f"`weights` applies to a factory (package.module:function); '{text}' carries its own weights.")
        kind = exported_kind(path)
        if kind == "an ONNX":
            return OnnxAdapter(path, input_range=input_range or (0.0, 1.0), device=device, threads=threads)
        if kind == "a TorchScript":
            return _torchscript(path, input_range, device)
        return _checkpoint(path, input_range, device)
    if _FACTORY.match(text):
        return _factory(text, weights, input_range)
    raise BlindspotError(f"`model` '{text}' is neither an existing file (checkpoint, TorchScript, ONNX) nor a factory "
                         "package.module:function.")


# --------------------------------------------------------------------------------------------
# precomputed reconstructions


def reconstruction_key(name: str) -> str:
    """The file name (without extension) of an image's reconstruction in a reconstructions folder.

    The image's origin with its file extension dropped and its slice written as ``_key value``
    pairs; characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``.

    >>> reconstruction_key("mni152[axis=2, slice=60]")
    'mni152_axis2_slice60'
    >>> reconstruction_key("case_000.nii.gz[axis=2, slice=128]"), reconstruction_key("scan 7.png")
    ('case_000_axis2_slice128', 'scan_7')
    """

    match = re.fullmatch(r"(.*?)(?:\[(.*)\])?", name)
    base, where = match.group(1), match.group(2)
    parts = [stem(base)]
    if where:
        parts += [re.sub(r"\s*=\s*", "", item.strip()) for item in where.split(",") if item.strip()]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts)).strip("_")


class ReconstructionFolder:
    """Reconstructions of the normal images written by another pipeline, one 2-D file per image.

    Files are paired with the images by name (:func:`reconstruction_key` plus any supported
    extension: ``.npy``, NIfTI, PNG/TIFF...); a missing file and a file that matches no image are
    errors. Float arrays (``.npy``, NIfTI) hold values in the model's ``input_range``, mapped back to
    [0, 1] units; image files and integer arrays are images of their type (uint8 / 255, other
    integers / 65535), whatever the model's range. Values outside the range they are read in (beyond
    :data:`RANGE_SLACK` for floats) are an error naming the file: a 0–255 float array for a model in
    [0, 1] would poison every score.
    """

    def __init__(self, folder: str | Path, *, input_range: Sequence[float] | str | None = None) -> None:

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise BlindspotError(f"`reconstructions` '{folder}' is not a folder.")
        self.index = index_by_stem(self.folder, "`reconstructions`")
        self.input_range = parse_input_range(input_range) or (0.0, 1.0)

    def read(self, names: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
        """The reconstructions of the images ``names`` (prepared at ``shape``), float32 ``(N, H, W)`` in [0, 1] units."""

        keys = [reconstruction_key(n) for n in names]
        for name, key in zip(names, keys):
            if key not in self.index:
                raise BlindspotError(f"`reconstructions` '{self.folder}' has no file for the image '{name}' (expected "
                                     f"'{key}.npy' or another supported type).")
        extra = sorted(set(self.index) - set(keys))
        if extra:
            raise BlindspotError(f"`reconstructions` file '{self.index[extra[0]]}' matches no audited image (names "
                                 f"such as '{keys[0]}'); remove it or audit the data it belongs to.")
        out = np.empty((len(keys), *shape), np.float32)
        for k, key in enumerate(keys):
            path = self.index[key]
            try:
                array = np.squeeze(read_array(path))
            except BlindspotError as err:
                raise BlindspotError(f"`reconstructions`: {err}") from None
            if array.shape != tuple(shape):
                raise BlindspotError(f"`reconstructions` file '{path}' has shape {array.shape}; the images are prepared "
                                     f"at {shape[0]}×{shape[1]} (`size`).")
            if not np.isfinite(array).all():
                raise BlindspotError(f"`reconstructions` file '{path}' contains NaN or infinite values.")
            out[k] = self._units(array, path)
        return out

    def _units(self, array: np.ndarray, path: Path) -> np.ndarray:
        """One file's values in [0, 1] units, refused when they lie outside the range they are read in.

        Image files and integer arrays are images of their type (:func:`~blindspot.data.io.image_units`:
        uint8 / 255, other integers / 65535); float arrays hold values in ``input_range`` (give or take
        :data:`RANGE_SLACK` of its width), mapped back.
        """
        if array.dtype.kind in "biu" or path.name.lower().endswith(IMAGE_SUFFIXES):
            values = image_units(array).astype(np.float64)
            if values.min() < 0 or values.max() > 1:
                raise BlindspotError(f"`reconstructions` file '{path}' holds {array.dtype} values from {array.min():g} to "
                                     f"{array.max():g}; image files and integer arrays are read as images (uint8 0–255, "
                                     "other integers 0–65535), so their values must lie in that range.")
            return values
        low, high = self.input_range
        seen = float(array.min()), float(array.max())
        slack = RANGE_SLACK * (high - low)
        if seen[0] < low - slack or seen[1] > high + slack:
            raise BlindspotError(f"`reconstructions` file '{path}' holds values from {seen[0]:g} to {seen[1]:g}, outside "
                                 f"the model's input range [{low:g}, {high:g}]; give the range they are stored in with "
                                 "`input_range` (e.g. 0,255), or store them as uint8 images.")
        return (array.astype(np.float64) - low) / (high - low)

    def files(self) -> list[str]:
        return [str(p) for p in self.index.values()]

    def record(self) -> dict:
        return {"spec": str(self.folder), "kind": "reconstructions", "input_range": list(self.input_range),
                "files": len(self.index)}
