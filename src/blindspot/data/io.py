"""File formats only: 2-D image files, ``.npy`` arrays, NIfTI volumes, and folder listings.

Nothing here knows a data set layout; the layouts (:mod:`~blindspot.data.nifti`,
:mod:`~blindspot.data.benchmark`, :mod:`~blindspot.data.brats`, :mod:`~blindspot.data.folder`) are
built on these readers. Every reader turns a damaged or foreign file into one sentence naming it.
Folder listings skip hidden files (``.DS_Store``, macOS ``._*`` resource forks, ...).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.errors import BlindspotError

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "files_in",
    "image_units",
    "index_by_stem",
    "is_nifti",
    "nifti_spacing",
    "read_array",
    "read_centers",
    "read_image",
    "read_nifti",
    "stem",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Every file type an image, a map, a label or a mask can be stored in.
ARRAY_SUFFIXES = (".nii.gz", ".nii", ".npy", *IMAGE_SUFFIXES)
_GRAY_MODES = ("L", "1", "I", "I;16", "I;16B", "I;16L", "F")
#: The note given (once) when colour images are read.
COLOUR_NOTE = "colour images were converted to grey (ITU-R 601 luma, Pillow's convert('L'))."


def is_nifti(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def stem(path: str | Path) -> str:
    """The file name without its (possibly double) extension: ``case_01.nii.gz`` → ``case_01``.

    >>> stem("case_01.nii.gz"), stem("a.b.png")
    ('case_01', 'a.b')
    """
    name = Path(path).name
    for suffix in ARRAY_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def files_in(folder: str | Path, suffixes: Sequence[str]) -> list[Path]:
    """The visible files of ``folder`` whose names end with one of ``suffixes``, sorted.

    Hidden files (names starting with a dot: ``.DS_Store``, macOS ``._*`` copies) are skipped.
    """
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        raise BlindspotError(f"folder '{folder}' does not exist.") from None
    except NotADirectoryError:
        raise BlindspotError(f"'{folder}' is not a folder.") from None
    except OSError as err:
        raise BlindspotError(f"cannot list folder '{folder}' ({err.strerror}).") from None
    return [p for p in entries if not p.name.startswith(".") and p.is_file() and p.name.lower().endswith(tuple(suffixes))]


def index_by_stem(folder: str | Path, what: str) -> dict[str, Path]:
    """Files of ``folder`` with a supported type, keyed by :func:`stem`; two files with one stem are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BlindspotError(f"{what} folder '{folder}' does not exist.")
    index: dict[str, Path] = {}
    for path in files_in(folder, ARRAY_SUFFIXES):
        key = stem(path)
        if key in index:
            raise BlindspotError(f"{what} folder '{folder}' has two files named '{key}' ('{index[key].name}' and '{path.name}'); keep one.")
        index[key] = path
    if not index:
        raise BlindspotError(f"{what} folder '{folder}' holds no file of a supported type ({', '.join(ARRAY_SUFFIXES)}).")
    return index


def read_image(path: str | Path) -> np.ndarray:
    """One 2-D image file (PNG, JPEG, BMP, TIFF) as float32 in [0, 1].

    8-bit images are divided by 255 and 16-bit ones by 65535; float TIFFs are taken as stored.
    A colour image is converted to grey (ITU-R 601 luma, Pillow's ``convert("L")``) with a warning.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode not in _GRAY_MODES:
                warnings.warn(COLOUR_NOTE, UserWarning, stacklevel=2)
                image = image.convert("L")
            array = np.asarray(image)
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BlindspotError(f"'{path}' is not a readable image file ({type(err).__name__}: {err}).") from None
    if array.ndim != 2:
        raise BlindspotError(f"'{path}' has shape {array.shape}; expected a 2-D grayscale image.")
    return image_units(array)


def image_units(array: np.ndarray) -> np.ndarray:
    """Stored image values as float32 in [0, 1] units: 8-bit divided by 255, other integers by 65535, floats as stored.

    The one scaling of stored images (:func:`read_image`, integer reconstructions of an audit).

    >>> image_units(np.array([0, 255], np.uint8)).tolist()
    [0.0, 1.0]
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype.kind in "iu":
        return array.astype(np.float32) / 65535
    return array.astype(np.float32)


def _open_nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist.") from None
    except Exception as err:  # nibabel raises many types for damaged files
        raise BlindspotError(f"'{path}' is not a readable NIfTI file ({type(err).__name__}: {err}).") from None


def _squeezed_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    while len(shape) > 2 and shape[-1] == 1:  # tolerate trailing singleton dimensions
        shape = shape[:-1]
    return shape


def _canonical_axes(affine: np.ndarray, path: Path) -> np.ndarray:
    """For each stored array axis: its axis in closest-canonical RAS order and whether it is flipped.

    The ``(axis, ±1)`` rows of nibabel's ``io_orientation``, which ``as_closest_canonical`` applies;
    an affine without an orientation (a zero column) keeps the stored order, with a warning.
    """
    from nibabel.orientations import io_orientation

    axes = io_orientation(affine)
    if np.isnan(axes).any():
        warnings.warn(f"'{path}' has an affine without an orientation; its axes are taken as stored.", UserWarning, stacklevel=3)
        return np.array([[0, 1], [1, 1], [2, 1]])
    return axes.astype(int)


def read_nifti(path: str | Path, *, ndim: int | None = 3, index: tuple | None = None,
               canonical: bool = False) -> np.ndarray:
    """A NIfTI array as float32 (trailing singleton axes dropped), with clear errors.

    Parameters
    ----------
    ndim : int or None
        Required number of dimensions (3: a volume); None accepts 2 or 3.
    index : tuple of slices, optional
        Read only this block of the (squeezed, and with ``canonical`` reoriented) array, e.g. a range
        of slices; a file already in canonical order is read without loading the rest.
    canonical : bool
        Bring a 3-D volume to nibabel's closest-canonical RAS orientation (``as_closest_canonical``:
        array axes 0, 1, 2 run towards the patient's right, anterior and superior), whatever the
        header's orientation, so volumes from any source slice alike.
    """
    path = Path(path)
    image = _open_nifti(path)
    shape = _squeezed_shape(image.shape)
    if (ndim is not None and len(shape) != ndim) or len(shape) not in (2, 3) or (canonical and len(shape) != 3):
        expected = "a 3-D volume" if ndim == 3 or canonical else "a 2-D or 3-D array"
        raise BlindspotError(f"'{path}' has shape {tuple(image.shape)}; expected {expected}.")
    reorient = None
    if canonical:
        axes = _canonical_axes(image.affine, path)
        if not (axes == [[0, 1], [1, 1], [2, 1]]).all():
            reorient, index = (axes, index), None  # the index applies to the reoriented array
    full = tuple(slice(None) for _ in shape) if index is None else tuple(index)
    full = full + (0,) * (len(image.shape) - len(shape))
    try:
        array = np.asarray(image.dataobj[full], dtype=np.float32)
    except Exception as err:
        raise BlindspotError(f"'{path}' could not be read ({type(err).__name__}: {err}); the file may be truncated.") from None
    if reorient is None:
        return array
    from nibabel.orientations import apply_orientation

    axes, index = reorient
    array = apply_orientation(array, axes)
    return np.ascontiguousarray(array if index is None else array[tuple(index)])


def nifti_shape(path: str | Path, *, canonical: bool = False) -> tuple[int, ...]:
    """The (squeezed) array shape of a NIfTI file, read from its header only; ``canonical``: in RAS order (:func:`read_nifti`)."""
    path = Path(path)
    image = _open_nifti(path)
    shape = _squeezed_shape(image.shape)
    if not canonical or len(shape) != 3:
        return shape
    out = [0, 0, 0]
    for n, (axis, _) in zip(shape, _canonical_axes(image.affine, path)):
        out[axis] = n
    return tuple(out)


def nifti_spacing(path: str | Path, *, canonical: bool = False) -> tuple[float, ...]:
    """The voxel size of each (squeezed) array axis of a NIfTI file, as its header stores it (millimetres).

    The header is read without nibabel's repair, which would turn a stored zero size into 1 mm;
    ``canonical`` gives the sizes in the RAS axis order of :func:`read_nifti`.
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    path = Path(path)
    try:
        with ImageOpener(str(path)) as file:
            size = file.read(4)  # the header's own size: 348 for NIfTI-1, 540 for NIfTI-2 (either byte order)
            file.seek(0)
            nifti2 = 540 in (int.from_bytes(size, "little"), int.from_bytes(size, "big"))
            header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(file, check=False)
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist.") from None
    except Exception as err:  # nibabel raises many types for damaged files
        raise BlindspotError(f"'{path}' is not a readable NIfTI file ({type(err).__name__}: {err}).") from None
    zooms = tuple(float(z) for z in header.get_zooms()[: len(_squeezed_shape(header.get_data_shape()))])
    if not canonical or len(zooms) != 3:
        return zooms
    out = [0.0, 0.0, 0.0]
    for z, (axis, _) in zip(zooms, _canonical_axes(header.get_best_affine(), path)):
        out[axis] = z
    return tuple(out)


def read_array(path: str | Path) -> np.ndarray:
    """One 2-D or 3-D array from a NIfTI, ``.npy`` or image file, with a clear error if unreadable.

    NIfTI arrays as float32, ``.npy`` as stored (never unpickled), images as float32 in [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise BlindspotError(f"'{path}' does not exist or is not a file.")
    name = path.name.lower()
    if is_nifti(name):
        array = read_nifti(path, ndim=None)
    elif name.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:  # truncated, pickled or not an .npy file
            raise BlindspotError(f"'{path}' is not a readable .npy array ({type(err).__name__}: {err}).") from None
    elif name.endswith(IMAGE_SUFFIXES):
        array = read_image(path)
    else:
        raise BlindspotError(f"'{path}' has an unsupported type; expected one of {', '.join(ARRAY_SUFFIXES)}.")
    if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
        raise BlindspotError(f"'{path}' holds a {array.dtype} array of shape {array.shape}; expected a 2-D or 3-D numeric array.")
    return array


def read_centers(path: str | Path, *, dims: int = 2) -> np.ndarray:
    """Anomaly centres from a file: int64 ``(N, 2)`` (row, column), one row per image.

    ``.npy`` arrays (never unpickled), or text with two integer columns separated by commas or
    white space (``#`` starts a comment), e.g. the centres another implementation used. A
    blindspot ``results.npz`` gives its ``centers``. ``dims=3``: ``(N, 3)`` voxel indices of
    whole volumes, in array index order.
    """
    path = Path(path)
    columns = "two" if dims == 2 else "three"
    what = "(row, column) pairs, one row per image" if dims == 2 else "voxel index triples, one row per volume"
    try:
        if path.name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as saved:
                array = saved["centers"]
        elif path.name.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().replace(",", " ")
            array = np.loadtxt(io.StringIO(text), ndmin=2)
    except FileNotFoundError:
        raise BlindspotError(f"`centers` file '{path}' does not exist.") from None
    except KeyError:
        raise BlindspotError(f"`centers` file '{path}' holds no 'centers' array.") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise BlindspotError(f"`centers` file '{path}' is not readable as {columns} integer columns ({err}).") from None
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != dims or array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)) \
            or not np.all(array == np.round(array)):
        raise BlindspotError(f"`centers` file '{path}' must hold integer {what}; "
                             f"got a {array.dtype} array of shape {array.shape}.")
    return array.astype(np.int64)
