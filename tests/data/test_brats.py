"""BraTS NIfTI subjects: ROOT/<subject>/<subject>_{modality,seg}.nii.gz, 2-D slices or whole volumes."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fixtures import SIZE, make_brats_nifti, make_mood, save_nifti

from blindspot.data import DataConfig, Preparation, detect_layout, iter_volumes, load, resolve
from blindspot.data.brats import list_subjects
from blindspot.data.io import read_nifti
from blindspot.data.preprocess import fit_geometry, foreground_mask, normalize_percentile
from blindspot.errors import BlindspotError

PREP = Preparation(normalize=99)
SUBJECTS = [f"BraTS2021_{k:05d}" for k in range(3)]


def brats(root, **options):
    return load(DataConfig(data=str(root), **{"preparation": PREP, **options}))


@pytest.fixture
def root(tmp_path):
    return make_brats_nifti(tmp_path / "brats")


def test_brats_nifti_modality_slices_and_volumes(root):
    assert detect_layout(str(root)) == "brats"
    data = brats(root)
    assert data.images.shape == (18, SIZE, SIZE) and data.volumes[:6] == ["BraTS2021_00000"] * 6
    assert data.anomalous.reshape(3, 6)[:, 2:4].all() and not data.anomalous.reshape(3, 6)[:, [0, 1, 4, 5]].any()
    assert data.labels.dtype == bool and (data.labels.any(axis=(1, 2)) == data.anomalous).all()
    t1 = brats(root, modality="t1", slices=(2, 3))
    assert len(t1) == 6 and t1.names[0] == "BraTS2021_00000[slice=2]" and t1.anomalous.all()
    assert t1.source["files"][0].endswith("BraTS2021_00000_t1.nii.gz") and t1.source["modality"] == "t1"
    volumes = list(iter_volumes(DataConfig(data=str(root), split="all", preparation=Preparation(normalize=99, size=12))))
    assert len(volumes) == 3 and volumes[0].image.shape == (6, 12, 12) and volumes[0].labels.dtype == bool
    with pytest.raises(BlindspotError, match=r"expected \[0, 1\] \(rescale with a percentile normalisation: `normalize`\)"):
        brats(root, preparation=Preparation())
    with pytest.raises(BlindspotError, match="slice 9 is out of range"):
        brats(root, slices=(9,))
    (root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    with pytest.raises(BlindspotError, match="BraTS2021_00001' has no file ending in _seg.nii.gz"):
        brats(root)


def test_slices_labels_and_files_match_the_volumes(root):
    data = brats(root)
    assert data.names == [f"{s}[slice={k}]" for s in SUBJECTS for k in range(6)]
    assert data.source["files"] == [str(root / s / f"{s}_{kind}.nii.gz") for s in SUBJECTS for kind in ("flair", "seg")]
    flair = read_nifti(root / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz")
    seg = read_nifti(root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    np.testing.assert_array_equal(data.images[6:12], np.rot90(np.moveaxis(normalize_percentile(flair, 99), 2, 0), axes=(1, 2)))  # per volume
    np.testing.assert_array_equal(data.labels[6:12], np.rot90(np.moveaxis(seg > 0, 2, 0), axes=(1, 2)))  # labels 1, 2 and 4 binarised
    np.testing.assert_array_equal(data.brain, foreground_mask(data.images))


@pytest.mark.parametrize(("split", "subjects"), [("all", SUBJECTS), ("train", SUBJECTS[:1]), ("test", SUBJECTS[1:])])
def test_subjects_are_split_60_40(root, split, subjects):
    data = brats(root, split=split)
    assert data.volumes == [s for s in subjects for _ in range(6)] and data.source["split"] == split
    assert data.source["files"] == [str(root / s / f"{s}_{kind}.nii.gz") for s in subjects for kind in ("flair", "seg")]
    assert data.anomalous.tolist() == [False, False, True, True, False, False] * len(subjects)
    every = brats(root)
    start = SUBJECTS.index(subjects[0]) * 6
    np.testing.assert_array_equal(data.images, every.images[start : start + len(data)])
    np.testing.assert_array_equal(data.labels, every.labels[start : start + len(data)])


def test_the_test_default_is_the_test_split_as_for_every_layout(root):
    assert resolve(DataConfig(data=str(root)), default_split="test").split == "test"
    assert resolve(DataConfig(data=str(root), split="all"), default_split="test").split == "all"
    assert resolve(DataConfig(data=str(root), split="test"), default_split="test").split == "test"
    assert resolve(DataConfig(data=str(root)), default_split="train").split == "train"


def test_default_slices_are_those_with_brain(tmp_path):
    root = make_brats_nifti(tmp_path / "brats", n_subjects=2)
    path = root / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz"
    volume = read_nifti(path)
    volume[..., 0] = 0  # an empty slice is skipped
    save_nifti(path, volume)
    data = brats(root)
    assert data.names[:5] == [f"BraTS2021_00000[slice={k}]" for k in range(1, 6)] and len(data) == 11
    assert data.source["slices"] is None and brats(root, slices=(0, 3)).source["slices"] == [0, 3]


def test_geometry_applies_to_images_and_labels(root):
    raw, data = brats(root), brats(root, preparation=Preparation(normalize=99, size=12))
    assert data.scale == 0.5 and data.images.shape == (18, 12, 12)
    np.testing.assert_array_equal(data.images, fit_geometry(raw.images, 12)[0])
    np.testing.assert_array_equal(data.labels, fit_geometry(raw.labels, 12, labels=True)[0])
    assert data.labels.dtype == bool


def test_whole_volumes_one_at_a_time(root):
    config = DataConfig(data=str(root), split="test", preparation=PREP)
    volumes = iter_volumes(config)
    first = next(volumes)
    assert first.name == "BraTS2021_00001" and first.files[1].endswith("BraTS2021_00001_seg.nii.gz")
    slices = brats(root, split="test")
    np.testing.assert_array_equal(first.image, slices.images[:6])
    np.testing.assert_array_equal(first.labels, slices.labels[:6])
    np.testing.assert_array_equal(first.brain, foreground_mask(first.image))
    assert [v.name for v in volumes] == ["BraTS2021_00002"]
    mood = make_mood(root.parent / "mood")
    with pytest.raises(BlindspotError, match="whole volumes are read from BraTS subjects .* has the nifti layout"):
        iter_volumes(DataConfig(data=str(mood)))


def test_hidden_subjects_and_files_are_skipped(root):
    (root / ".cache").mkdir()
    (root / ".cache" / "x_seg.nii.gz").write_bytes(b"junk")
    (root / "BraTS2021_00000" / "._BraTS2021_00000_flair.nii.gz").write_bytes(b"resource fork")
    (root / ".DS_Store").write_bytes(b"\0")
    assert [s for s, _, _ in list_subjects(root)] == SUBJECTS
    assert len(brats(root)) == 18


def test_subject_errors(root):
    (root / "BraTS2021_00000" / "BraTS2021_00000_flair.nii").write_bytes(b"")
    with pytest.raises(BlindspotError, match=r"subject folder '.*BraTS2021_00000' has 2 files ending in _flair.nii.gz; expected exactly one"):
        brats(root)
    (root / "BraTS2021_00000" / "BraTS2021_00000_flair.nii").unlink()
    save_nifti(root / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz", np.zeros((SIZE, SIZE, 5), np.uint8))
    with pytest.raises(BlindspotError, match=r"segmentation '.*BraTS2021_00002_seg.nii.gz' has shape \(24, 24, 5\) but its image"):
        brats(root)
    with pytest.raises(BlindspotError, match="is not a folder; the brats layout is one folder per subject"):
        list_subjects(root / "nothing")
    (root.parent / "empty").mkdir()
    with pytest.raises(BlindspotError, match="holds no subject folder"):
        list_subjects(root.parent / "empty")
