"""One orientation for every volume source: closest-canonical RAS, sliced and shown by one rule.

The template written to a NIfTI file (with its own affine, flipped to LAS, or with its axes
permuted) gives exactly the slices of ``--data mni152``; BraTS subjects and whole volumes follow.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from eval_fixtures import make_brats_nifti

from blindspot.data import DataConfig, Preparation, load, whole_volumes
from blindspot.data.io import nifti_shape, nifti_spacing, read_nifti
from blindspot.data.mni152 import load_mni152_volume, to_canvas

SLICES = (64, 80)


def template_affine() -> np.ndarray:
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=1).affine


def las(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same brain stored left-to-right: data flipped along axis 0, the affine's first column negated."""
    flipped = affine.copy()
    flipped[:, 0] *= -1
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 0] * (volume.shape[0] - 1)  # voxel n-1-i is where voxel i was
    return volume[::-1], flipped


def swapped(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same brain with array axes 0 and 1 exchanged (an ARS file)."""
    return volume.transpose(1, 0, 2), affine[:, [1, 0, 2, 3]]


def save(path, volume, affine, zooms=None):
    image = nib.Nifti1Image(np.ascontiguousarray(volume), affine)
    if zooms is not None:
        image.header.set_zooms(zooms)
    nib.save(image, str(path))
    return path


def nifti_slices(path, **options) -> np.ndarray:
    """A NIfTI file's slices as the loader gives them, centred on the template's canvas."""
    images = load(DataConfig(data=str(path), slices=SLICES, **options)).images
    return np.stack([to_canvas(image) for image in images])


@pytest.fixture(scope="module")
def template_files(tmp_path_factory):
    """The template as NIfTI files: with its own (RAS) affine, flipped to LAS, and with axes 0 and 1 swapped."""
    folder = tmp_path_factory.mktemp("template")
    volume, affine = np.asarray(load_mni152_volume()), template_affine()
    marked = marked_template()
    return {"ras": save(folder / "ras.nii", volume, affine),
            "las": save(folder / "las.nii", *las(volume, affine)),
            "ars": save(folder / "ars.nii", *swapped(volume, affine)),
            "marked ras": save(folder / "marked_ras.nii", marked, affine),
            "marked las": save(folder / "marked_las.nii", *las(marked, affine))}


def marked_template() -> np.ndarray:
    """The template with a bright block in its left hemisphere (the template itself is exactly left-right symmetric)."""
    marked = np.array(load_mni152_volume())
    marked[20:40, 100:130, 60:90] = 1
    return marked


@pytest.mark.parametrize("kind", ["ras", "las", "ars"])
def test_template_as_nifti_gives_the_mni152_slices(template_files, kind):
    expected = load(DataConfig(data="mni152", slices=SLICES)).images
    np.testing.assert_array_equal(nifti_slices(template_files[kind]), expected)
    assert nifti_shape(template_files[kind], canonical=True) == load_mni152_volume().shape


@pytest.mark.parametrize("kind", ["marked ras", "marked las"])
def test_left_stays_left(template_files, kind):
    """An asymmetric brain stored either way shows its left hemisphere on the same side (anterior up)."""
    expected = np.stack([to_canvas(np.rot90(marked_template()[:, :, s])) for s in SLICES])
    np.testing.assert_array_equal(nifti_slices(template_files[kind]), expected)


def test_normalised_reading_takes_the_same_orientation(template_files):
    """The whole-volume path (``normalize``) and the slab path give the same slices in either orientation."""
    expected = load(DataConfig(data="mni152", slices=SLICES, preparation=Preparation(normalize=99))).images
    for kind in ("ras", "las", "ars"):
        np.testing.assert_array_equal(nifti_slices(template_files[kind], preparation=Preparation(normalize=99)), expected)
    marked = [nifti_slices(template_files[kind], preparation=Preparation(normalize=99)) for kind in ("marked ras", "marked las")]
    np.testing.assert_array_equal(marked[1], marked[0])


def test_other_axes_follow_the_same_rule(template_files):
    for axis, s in ((0, 98), (1, 120)):
        expected = load(DataConfig(data="mni152", axis=axis, slices=(s,))).images
        got = load(DataConfig(data=str(template_files["las"]), axis=axis, slices=(s,))).images
        np.testing.assert_array_equal(to_canvas(got[0]), expected[0])


def test_whole_volumes_and_spacing_are_canonical(tmp_path):
    volume = np.asarray(load_mni152_volume())[60:100, 80:130, 70:90]
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    stored, stored_affine = swapped(*las(volume, affine))
    path = save(tmp_path / "ars.nii", stored, stored_affine, zooms=(1.0, 2.0, 3.0))
    assert nifti_spacing(path) == (1.0, 2.0, 3.0) and nifti_spacing(path, canonical=True) == (2.0, 1.0, 3.0)
    np.testing.assert_array_equal(read_nifti(path, canonical=True), volume)
    np.testing.assert_array_equal(read_nifti(path, canonical=True, index=(slice(None), slice(None), slice(4, 6))),
                                  volume[:, :, 4:6])
    whole = whole_volumes(DataConfig(data=str(path)))
    got = whole.read(0)
    np.testing.assert_array_equal(got.image, volume)
    assert got.spacing == (2.0, 1.0, 3.0)
    template = whole_volumes(DataConfig(data="mni152")).read(0).image
    np.testing.assert_array_equal(template[60:100, 80:130, 70:90], volume)


def test_brats_subjects_in_another_orientation_slice_alike(tmp_path):
    ras = make_brats_nifti(tmp_path / "ras")
    lps = tmp_path / "lps"
    for image in sorted(ras.glob("*/*.nii.gz")):
        stored = nib.load(str(image))
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        affine[:2, 3] = np.array(stored.shape[:2]) - 1  # voxel (n-1-i, n-1-j) is where voxel (i, j) was
        (lps / image.parent.name).mkdir(parents=True, exist_ok=True)
        save(lps / image.parent.name / image.name, np.asanyarray(stored.dataobj)[::-1, ::-1], affine)
    options = dict(split="all", preparation=Preparation(normalize=99))
    expected, got = load(DataConfig(data=str(ras), **options)), load(DataConfig(data=str(lps), **options))
    np.testing.assert_array_equal(got.images, expected.images)
    np.testing.assert_array_equal(got.labels, expected.labels)
    flair = "BraTS2021_00000/BraTS2021_00000_flair.nii.gz"
    assert not np.array_equal(read_nifti(lps / flair), read_nifti(ras / flair))  # stored differently


def test_an_affine_without_orientation_keeps_the_stored_order_with_a_warning(tmp_path):
    volume = np.asarray(load_mni152_volume())[60:100, 80:130, 70:90]
    header = nib.Nifti1Header()
    header.set_data_shape(volume.shape)
    header.set_data_dtype(np.float32)
    header["qform_code"], header["sform_code"] = 0, 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]  # axis 0 maps nowhere
    path = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), None, header=header), str(path))
    with pytest.warns(UserWarning, match=r"flat.nii' has an affine without an orientation; its axes are taken as stored"):
        images = load(DataConfig(data=str(path), slices=(5,))).images
    np.testing.assert_array_equal(images[0], np.rot90(volume[:, :, 5]))
