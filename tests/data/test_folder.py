"""The generic folder layout: normal/, abnormal/, optional masks/ and train/ (2-D files or volumes)."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fixtures import SIZE, brain_slice, lesion, make_folder, save_nifti, save_png

from blindspot.data import DataConfig, Preparation, detect_layout, load
from blindspot.data.io import read_image
from blindspot.data.preprocess import fit_geometry, foreground_mask
from blindspot.errors import BlindspotError

TEST_NAMES = ["n0.png", "n1.png", "n2.png", "a0.png", "a1.png"]
TRAIN_NAMES = ["t0.png", "t1.png", "t2.png"]


def folder(root, **options):
    return load(DataConfig(data=str(root), **options))


@pytest.fixture
def root(tmp_path):
    return make_folder(tmp_path / "data")


def test_folder_layout_matches_masks_by_name(root):
    assert detect_layout(str(root)) == "folder"
    data = folder(root, split="test")
    assert data.names == TEST_NAMES
    assert data.anomalous.tolist() == [False] * 3 + [True] * 2
    np.testing.assert_array_equal(data.labels[3], read_image(root / "masks" / "a0.png") > 0)
    assert data.labels.dtype == bool and data.labels[:3].sum() == 0 and len(folder(root, split="train")) == 3
    save_png(root / "masks" / "zz.png", np.ones((SIZE, SIZE)))
    with pytest.raises(BlindspotError, match="mask .*zz.png' matches no image"):
        folder(root, split="test")
    (root / "masks" / "zz.png").unlink()
    (root / "masks" / "a1.png").unlink()
    with pytest.raises(BlindspotError, match="abnormal image .*a1.png' has no mask"):
        folder(root, split="test")


@pytest.mark.parametrize(
    ("split", "names", "flags"),
    [
        ("train", TRAIN_NAMES, [False] * 3),
        ("test", TEST_NAMES, [False] * 3 + [True] * 2),
        ("all", TRAIN_NAMES + TEST_NAMES, [False] * 6 + [True] * 2),
    ],
)
def test_every_split(root, split, names, flags):
    data = folder(root, split=split)
    assert data.names == names and data.volumes == [n[:-4] for n in names] and data.anomalous.tolist() == flags
    sub = {"t": "train", "n": "normal", "a": "abnormal"}
    files = []
    for name in names:
        files.append(str(root / sub[name[0]] / name))
        if name[0] == "a" or (split != "train" and (root / "masks" / name).exists()):
            files.append(str(root / "masks" / name))
    assert data.source["files"] == files and data.source["split"] == split
    for image, name in zip(data.images, names):
        np.testing.assert_allclose(image, read_image(root / sub[name[0]] / name))
    if split == "train":
        assert data.labels is None  # training images have no annotations
    else:
        assert not data.labels[~data.anomalous].any() and data.labels[data.anomalous].any(axis=(1, 2)).all()
    np.testing.assert_array_equal(data.brain, foreground_mask(data.images))


def test_default_split_all_reads_train_only_when_present(root):
    assert folder(root).names == TRAIN_NAMES + TEST_NAMES
    for path in (root / "train").iterdir():
        path.unlink()
    (root / "train").rmdir()
    assert folder(root).names == TEST_NAMES
    with pytest.raises(BlindspotError, match=r"training folder '.*train' does not exist"):
        folder(root, split="train")


def test_without_masks_there_are_no_pixel_labels(root):
    for path in (root / "masks").iterdir():
        path.unlink()
    (root / "masks").rmdir()
    data = folder(root, split="test")
    assert data.labels is None and data.anomalous.tolist() == [False] * 3 + [True] * 2


def test_hidden_files_are_skipped(root):
    for sub in ("normal", "abnormal", "masks", "train"):
        (root / sub / "._n0.png").write_bytes(b"\0\5\26\7 AppleDouble")
        (root / sub / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert folder(root).names == TRAIN_NAMES + TEST_NAMES


def test_labels_are_resized_nearest_with_the_images(root):
    raw = folder(root, split="test")
    data = folder(root, split="test", preparation=Preparation(size=16, geometry="stretch"))
    assert data.labels.dtype == bool and data.labels.shape == (5, 16, 16) and data.scale == pytest.approx(16 / SIZE)
    np.testing.assert_array_equal(data.labels, fit_geometry(raw.labels, 16, "stretch", labels=True)[0])
    np.testing.assert_array_equal(data.images, fit_geometry(raw.images, 16, "stretch")[0])


def test_volumes_give_their_slices(tmp_path):
    rng = np.random.default_rng(0)
    volume = np.stack([brain_slice(rng) for _ in range(4)], axis=-1).astype(np.float32)
    volume[..., 0] = 0  # no brain: skipped by default
    mask = np.zeros(volume.shape, bool)
    mask[..., 2] = lesion()
    save_nifti(tmp_path / "abnormal" / "v.nii.gz", volume)
    save_nifti(tmp_path / "masks" / "v.nii.gz", mask.astype(np.uint8))
    (tmp_path / "normal").mkdir()
    np.save(tmp_path / "normal" / "n.npy", brain_slice(rng).astype(np.float32))
    data = folder(tmp_path, split="test", axis=2)
    assert data.names == ["n.npy", "v.nii.gz[slice=1]", "v.nii.gz[slice=2]", "v.nii.gz[slice=3]"]
    assert data.volumes == ["n", "v", "v", "v"] and data.anomalous.tolist() == [False, True, True, True]
    np.testing.assert_array_equal(data.images[1:], np.moveaxis(volume[..., 1:], 2, 0))
    np.testing.assert_array_equal(data.labels[2], lesion())
    assert not data.labels[[0, 1, 3]].any()
    chosen = folder(tmp_path, split="test", axis=2, slices=(2,))
    assert chosen.names == ["n.npy", "v.nii.gz[slice=2]"]
    with pytest.raises(BlindspotError, match=r"slice 7 is out of range for '.*v.nii.gz' along axis 2 \(0..3\)"):
        folder(tmp_path, split="test", slices=(7,))


def test_folder_errors(root):
    np.save(root / "normal" / "n0.npy", np.zeros((SIZE, SIZE), np.float32))
    with pytest.raises(BlindspotError, match=r"normal folder '.*normal' has two files named 'n0' \('n0.npy' and 'n0.png'\)"):
        folder(root, split="test")
    (root / "normal" / "n0.npy").unlink()
    save_png(root / "masks" / "a0.png", np.ones((10, 10)))
    with pytest.raises(BlindspotError, match=r"mask '.*a0.png' has shape \(10, 10\) but its image '.*a0.png' has \(24, 24\)"):
        folder(root, split="test")
    save_png(root / "masks" / "a0.png", lesion())
    save_png(root / "normal" / "zbig.png", brain_slice(np.random.default_rng(0), 30))
    with pytest.raises(BlindspotError, match=r"'.*zbig.png' has size \(30, 30\) but earlier images have \(24, 24\); set `size`"):
        folder(root, split="test")
    assert folder(root, split="test", preparation=Preparation(size=24)).images.shape == (6, 24, 24)
    (root / "normal" / "zbig.png").unlink()
    np.save(root / "normal" / "zbig.npy", np.full((SIZE, SIZE), 2.0))
    with pytest.raises(BlindspotError, match=r"'.*zbig.npy' has intensities in \[2, 2\]; expected \[0, 1\]"):
        folder(root, split="test")
