"""NIfTI volumes (a file or a MOOD-style folder): 60 / 40 split, slice selection, per-volume preparation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import brain_volume, save_nifti

from blindspot.data import DataConfig, Preparation, load
from blindspot.data.nifti import DEFAULT_SLICE, TRAIN_SLICES, list_volumes, parse_slices, read_slices, split_files
from blindspot.data.preprocess import fit_geometry, normalize_percentile
from blindspot.errors import BlindspotError


def nifti(path, **options):
    return load(DataConfig(data=str(path), **options))


def rotated(stack):
    """Slices of an RAS volume (slice axis first) as every volume source shows them: each rotated by 90°."""
    return np.rot90(stack, axes=(1, 2))


def test_nifti_folder_slices_and_split(nifti_folder):
    images = nifti(nifti_folder, slices=parse_slices("10:13"), split="test")
    assert images.images.shape == (2 * 3, 48, 48)
    assert images.names[0] == "case_003.nii.gz[axis=2, slice=10]"
    assert images.source["files"][-1].endswith("case_004.nii.gz")
    assert [f.rsplit("/", 1)[1] for f in images.source["files"]] == ["case_003.nii.gz", "case_004.nii.gz"]
    assert images.volumes == ["case_003.nii.gz"] * 3 + ["case_004.nii.gz"] * 3
    assert images.labels is None and images.anomalous is None and images.source["layout"] == "nifti"
    np.testing.assert_array_equal(images.images[4], np.rot90(brain_volume(seed=4)[:, :, 11]))  # RAS file: anterior up
    axis0 = nifti(nifti_folder / "case_000.nii.gz", axis=0, slices=[24])
    np.testing.assert_array_equal(axis0.images[0], np.rot90(brain_volume(seed=0)[24]))
    assert axis0.names == ["case_000.nii.gz[axis=0, slice=24]"]


@pytest.mark.parametrize(("split", "cases"), [("all", [0, 1, 2, 3, 4]), ("train", [0, 1, 2]), ("test", [3, 4])])
def test_every_split_reads_its_volumes(nifti_folder, split, cases):
    images = nifti(nifti_folder, split=split, slices=(12,))
    assert images.source["split"] == split
    assert images.volumes == [f"case_{k:03d}.nii.gz" for k in cases]
    assert [f.rsplit("/", 1)[1] for f in images.source["files"]] == [f"case_{k:03d}.nii.gz" for k in cases]
    np.testing.assert_array_equal(images.images, np.stack([np.rot90(brain_volume(seed=k)[:, :, 12]) for k in cases]))


def test_split_is_first_60_percent_train():
    files = [f"v{k:02d}" for k in range(10)]
    assert split_files(files, "train") == files[:6]
    assert split_files(files, "test") == files[6:]
    assert split_files(files, "all") == files
    assert split_files(files[:5], "train") == files[:3] and split_files(files[:5], "test") == files[3:5]
    with pytest.raises(BlindspotError, match=r"the train split of 1 volume\(s\) is empty; use split all"):
        split_files(files[:1], "train")
    with pytest.raises(BlindspotError, match="`split` must be one of all, train, test; got 'val'"):
        split_files(files, "val")


def test_default_slices_are_128_and_120_to_139_for_training(tmp_path):
    for k in range(3):
        save_nifti(tmp_path / f"v{k}.nii.gz", brain_volume((10, 10, 140), seed=k))
    assert DEFAULT_SLICE == 128 and TRAIN_SLICES == tuple(range(120, 140))
    test = nifti(tmp_path, split="test")
    assert test.names == ["v1.nii.gz[axis=2, slice=128]", "v2.nii.gz[axis=2, slice=128]"]
    np.testing.assert_array_equal(test.images[0], np.rot90(brain_volume((10, 10, 140), seed=1)[:, :, 128]))
    assert nifti(tmp_path).source["slices"] == [128] and len(nifti(tmp_path)) == 3
    train = nifti(tmp_path, split="train")  # int(3 · 0.6) = 1 volume
    assert train.source["slices"] == list(range(120, 140)) and train.volumes == ["v0.nii.gz"] * 20
    assert train.names[0] == "v0.nii.gz[axis=2, slice=120]" and train.names[-1] == "v0.nii.gz[axis=2, slice=139]"
    np.testing.assert_array_equal(train.images, rotated(np.moveaxis(brain_volume((10, 10, 140), seed=0)[:, :, 120:140], 2, 0)))


def test_slices_keep_their_order_and_hidden_files_are_skipped(nifti_folder):
    (nifti_folder / "._case_000.nii.gz").write_bytes(b"macOS resource fork")
    (nifti_folder / ".DS_Store").write_bytes(b"\0")
    images = nifti(nifti_folder, slices=(14, 10, 12))
    assert len(images.source["files"]) == 5 and images.names[:3] == [f"case_000.nii.gz[axis=2, slice={s}]" for s in (14, 10, 12)]
    np.testing.assert_array_equal(images.images[:3], rotated(np.moveaxis(brain_volume(seed=0)[:, :, [14, 10, 12]], 2, 0)))
    assert [p.name for p in list_volumes(nifti_folder)] == [f"case_{k:03d}.nii.gz" for k in range(5)]


def test_normalisation_is_per_volume_before_resizing(tmp_path):
    volumes = [brain_volume(seed=k) * (100 + 900 * k) for k in range(2)]
    for k, volume in enumerate(volumes):
        save_nifti(tmp_path / f"v{k}.nii", volume)
    images = nifti(tmp_path, slices=(8, 12), preparation=Preparation(normalize=99, size=32))
    for k, volume in enumerate(volumes):
        normalized = rotated(np.moveaxis(normalize_percentile(volume, 99)[:, :, [8, 12]], 2, 0))
        np.testing.assert_array_equal(images.images[2 * k : 2 * k + 2], fit_geometry(normalized, 32)[0])
    assert images.scale == 32 / 48 and images.images.shape == (4, 32, 32)
    block = read_slices(tmp_path / "v1.nii", 2, [12, 8], 99)
    np.testing.assert_array_equal(block, rotated(np.moveaxis(normalize_percentile(volumes[1], 99)[:, :, [12, 8]], 2, 0)))


def test_volumes_of_different_shapes_mix_once_resized(tmp_path):
    save_nifti(tmp_path / "a.nii", brain_volume())
    save_nifti(tmp_path / "b.nii", brain_volume(shape=(40, 48, 24)))
    with pytest.raises(BlindspotError, match=r"'.*b.nii' gives slices of size \(48, 40\) but '.*a.nii' gives \(48, 48\); "
                                             r"all volumes must have one in-plane size \(or set `size`\)"):
        nifti(tmp_path, slices=[12])
    both = nifti(tmp_path, slices=[12], preparation=Preparation(size=24))
    assert both.images.shape == (2, 24, 24) and both.scale == pytest.approx((24 / 48 + 24 / 48) / 2)


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (lambda d: None, dict(data="missing"), "'.*missing' does not exist"),
        (lambda d: (d / "bad.nii.gz").write_bytes(b"not a nifti"), dict(), "bad.nii.gz' is not a readable NIfTI file"),
        (lambda d: save_nifti(d / "flat.nii", np.ones((8, 8), np.float32)), dict(), r"flat.nii' has shape \(8, 8\); expected a 3-D volume"),
        (lambda d: save_nifti(d / "v.nii", brain_volume()), dict(slices=(24,)), r"slice 24 is out of range for '.*v.nii' along axis 2 \(0..23\)"),
        (lambda d: save_nifti(d / "v.nii", np.where(brain_volume() > 0, np.nan, 0)), dict(slices=(12,)), r"v.nii\[axis=2, slice=12\] contains NaN"),
        (lambda d: save_nifti(d / "v.nii", brain_volume() * 4), dict(slices=(12,)), r"has intensities in \[0, 3.\d+\]; expected \[0, 1\]"),
        (lambda d: save_nifti(d / "v.nii", brain_volume() * 0), dict(slices=(12,), preparation=Preparation(normalize=99)),
         "'.*v.nii' has an empty foreground"),
        (lambda d: None, dict(split="test", layout="nifti"), "holds no .nii or .nii.gz file"),
        (lambda d: None, dict(split="test"), "matches no known layout"),
    ],
)
def test_bad_data_gives_one_sentence(tmp_path, make, options, message):
    make(tmp_path)
    data = options.pop("data", str(tmp_path))
    if data == "missing":
        data = str(tmp_path / "missing")
    with pytest.raises(BlindspotError, match=message) as err:
        load(DataConfig(data=data, **options))
    assert "\n" not in str(err.value)


def test_empty_slice_is_reported_when_anomalies_need_a_centre(tmp_path):
    save_nifti(tmp_path / "v.nii", brain_volume())
    with pytest.raises(BlindspotError, match=r"v.nii\[axis=2, slice=0\] has an empty foreground"):
        nifti(tmp_path, slices=(0,)).require_foreground()


def test_truncated_volume_is_reported(tmp_path):
    save_nifti(tmp_path / "v.nii.gz", brain_volume())
    blob = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "v.nii.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BlindspotError, match="v.nii.gz'"):
        nifti(tmp_path, slices=[12])


def test_a_file_that_is_not_nifti(tmp_path):
    (tmp_path / "v.txt").write_text("x")
    with pytest.raises(BlindspotError, match=r"'.*v.txt' is a file; expected a data set folder or a NIfTI volume"):
        nifti(tmp_path / "v.txt")
    with pytest.raises(BlindspotError, match=r"'.*v.txt' is not a NIfTI file; expected a .nii or .nii.gz file"):
        list_volumes(tmp_path / "v.txt")


def test_parse_slices_errors():
    assert parse_slices("120:140") == range(120, 140)
    with pytest.raises(BlindspotError, match="A:B"):
        parse_slices("120-140")
    with pytest.raises(BlindspotError, match="empty"):
        parse_slices("5:5")
    with pytest.raises(BlindspotError, match="`slices` -1:3 is empty or negative"):
        parse_slices("-1:3")
