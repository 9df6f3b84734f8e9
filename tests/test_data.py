import numpy as np
import pytest
from skimage.exposure import equalize_hist

from blindspot.data import (
    DataOptions,
    equalize_histogram,
    load_images,
    nifti_slices,
    normalize_percentile,
    parse_slices,
    split_files,
)
from blindspot.data.mni152 import DEFAULT_SLICES, to_canvas
from blindspot.errors import BlindspotError
from conftest import brain_volume, save_nifti


def test_mni152_default_test_set(mni_images):
    assert mni_images.shape == (len(DEFAULT_SLICES), 256, 256)
    assert mni_images.dtype == np.float32
    assert mni_images.min() == 0 and mni_images.max() <= 1
    assert ((mni_images > 0).mean(axis=(1, 2)) > 0.25).all()  # central slices: the brain fills the canvas
    assert (mni_images[:, :5, :] == 0).all()  # background around the brain


def test_to_canvas_centres_pads_and_crops():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = to_canvas(image, 6)
    np.testing.assert_array_equal(out[1:4, 1:5], image)
    assert out.sum() == image.sum()
    np.testing.assert_array_equal(to_canvas(np.arange(64.0).reshape(8, 8), 4), np.arange(64.0).reshape(8, 8)[2:6, 2:6])


def test_nifti_folder_slices_and_split(nifti_folder):
    images = nifti_slices(nifti_folder, axis=2, slices=parse_slices("10:13"), split="test")
    assert images.images.shape == (2 * 3, 48, 48)
    assert images.names[0] == "case_003.nii.gz[axis=2, slice=10]"
    assert images.source["files"][-1].endswith("case_004.nii.gz")
    np.testing.assert_array_equal(images.images[4], brain_volume(seed=4)[:, :, 11])
    axis0 = nifti_slices(nifti_folder / "case_000.nii.gz", axis=0, slices=[24])
    np.testing.assert_array_equal(axis0.images[0], brain_volume(seed=0)[24])


def test_split_is_first_60_percent_train():
    files = [f"v{k:02d}" for k in range(10)]
    assert split_files(files, "train") == files[:6]
    assert split_files(files, "test") == files[6:]
    assert split_files(files, "all") == files


def test_equalize_matches_skimage_with_mask(mni_images):
    out = equalize_histogram(mni_images[:2])
    for image, equalized in zip(mni_images[:2], out):
        mask = image > 0
        expected = np.where(mask, equalize_hist(image, nbins=256, mask=mask), 0).astype(np.float32)
        np.testing.assert_array_equal(equalized, expected)
        assert (equalized[~mask] == 0).all() and (equalized[mask] > 0).all()
        counts, _ = np.histogram(equalized[mask], bins=10, range=(0, 1))
        assert counts.min() > 0.5 * counts.mean()  # close to flat


def test_normalize_percentile_keeps_background_and_foreground():
    volume = brain_volume() * 1000
    out = normalize_percentile(volume, 99)
    assert out.max() == 1 and ((out > 0) == (volume > 0)).all()
    assert np.isclose(np.percentile(out[out > 0], 50), np.percentile(volume[volume > 0], 50) / np.percentile(volume[volume > 0], 99))


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (lambda d: None, dict(data="missing"), "'.*missing' does not exist"),
        (lambda d: (d / "bad.nii.gz").write_bytes(b"not a nifti"), dict(), "bad.nii.gz' is not a readable NIfTI file"),
        (lambda d: save_nifti(d / "flat.nii", np.ones((8, 8), np.float32)), dict(), r"flat.nii' has shape \(8, 8\); expected a 3-D volume"),
        (lambda d: save_nifti(d / "v.nii", brain_volume()), dict(slices=(24,)), r"slice 24 is out of range for '.*v.nii' along axis 2 \(0..23\)"),
        (lambda d: save_nifti(d / "v.nii", np.where(brain_volume() > 0, np.nan, 0)), dict(slices=(12,)), r"v.nii\[axis=2, slice=12\] contains NaN"),
        (lambda d: save_nifti(d / "v.nii", brain_volume()), dict(slices=(0,)), r"v.nii\[axis=2, slice=0\] has an empty foreground"),
        (lambda d: save_nifti(d / "v.nii", brain_volume() * 4), dict(slices=(12,)), r"has intensities in \[0, 3.\d+\]; expected \[0, 1\]"),
        (lambda d: None, dict(split="test"), "holds no .nii or .nii.gz file"),
    ],
)
def test_bad_data_gives_one_sentence(tmp_path, make, options, message):
    make(tmp_path)
    data = options.pop("data", str(tmp_path))
    if data == "missing":
        data = str(tmp_path / "missing")
    with pytest.raises(BlindspotError, match=message):
        DataOptions(data=data, **options).load()


def test_truncated_volume_is_reported(tmp_path):
    save_nifti(tmp_path / "v.nii.gz", brain_volume())
    blob = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "v.nii.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BlindspotError, match="v.nii.gz'"):
        load_images(str(tmp_path), slices=[12])


def test_volumes_of_different_size_are_rejected(tmp_path):
    save_nifti(tmp_path / "a.nii", brain_volume())
    save_nifti(tmp_path / "b.nii", brain_volume(shape=(40, 48, 24)))
    with pytest.raises(BlindspotError, match="same in-plane size"):
        load_images(str(tmp_path), slices=[12])


def test_parse_slices_errors():
    assert parse_slices("120:140") == range(120, 140)
    with pytest.raises(BlindspotError, match="A:B"):
        parse_slices("120-140")
    with pytest.raises(BlindspotError, match="empty"):
        parse_slices("5:5")
