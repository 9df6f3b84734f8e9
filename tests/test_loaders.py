"""Labelled data set loaders: every layout, preprocessing, and a clear error for each wrong layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import SIZE, make_benchmark, make_brats2021, make_brats_nifti, make_folder, make_mood, save_png

from blindspot.data.benchmark import Preprocessing, detect_layout, load_labelled, read_image
from blindspot.data.brats import iter_brats_volumes
from blindspot.data.preprocess import center_crop, equalize_histogram, foreground_mask, resize
from blindspot.errors import BlindspotError


def test_benchmark_layout(tmp_path):
    root = make_benchmark(tmp_path / "RSNA")
    assert detect_layout(root) == "benchmark"
    test = load_labelled(root)
    assert test.images.shape == (6, SIZE, SIZE) and test.images.dtype == np.float32
    assert test.anomalous.tolist() == [False] * 3 + [True] * 3 and test.labels is None
    assert test.names[0] == "test0_0.png" and test.volumes == test.names
    np.testing.assert_array_equal(test.brain, foreground_mask(test.images))
    train = load_labelled(root, split="train")
    assert len(train) == 4 and not train.anomalous.any()
    np.testing.assert_allclose(train.images[0], read_image(root / "images" / "train0_0.png"))


def test_brats2021_slices_pair_flair_with_seg(tmp_path):
    root = make_brats2021(tmp_path / "BraTS2021")
    assert detect_layout(root) == "brats2021"
    data = load_labelled(root)
    assert data.anomalous.tolist() == [False, False, True, True, True]
    assert data.labels.dtype == bool and data.labels[:2].sum() == 0
    for k, name in enumerate(data.names[2:], start=2):
        mask = read_image(root / "test" / "annotation" / name.replace("flair", "seg")) > 0
        np.testing.assert_array_equal(data.labels[k], mask)
    assert len(load_labelled(root, split="train")) == 4
    (root / "test" / "annotation" / "BraTS2021_20001_seg_70.png").unlink()
    with pytest.raises(BlindspotError, match="tumour slice .*BraTS2021_20001_flair_70.png' has no mask"):
        load_labelled(root)


def test_brats_nifti_modality_slices_and_volumes(tmp_path):
    root = make_brats_nifti(tmp_path / "brats")
    assert detect_layout(root) == "brats"
    prep = Preprocessing(normalize=99)
    data = load_labelled(root, preprocessing=prep)
    assert data.images.shape == (18, SIZE, SIZE) and data.volumes[:6] == ["BraTS2021_00000"] * 6
    assert data.anomalous.reshape(3, 6)[:, 2:4].all() and not data.anomalous.reshape(3, 6)[:, [0, 1, 4, 5]].any()
    t1 = load_labelled(root, modality="t1", slices=[2, 3], preprocessing=prep)
    assert len(t1) == 6 and t1.names[0] == "BraTS2021_00000[slice=2]" and t1.anomalous.all()
    volumes = list(iter_brats_volumes(root, preprocessing=Preprocessing(normalize=99, resize=12)))
    assert len(volumes) == 3 and volumes[0].image.shape == (6, 12, 12) and volumes[0].labels.dtype == bool
    with pytest.raises(BlindspotError, match=r"expected \[0, 1\] \(use --normalize"):
        load_labelled(root)
    with pytest.raises(BlindspotError, match="slice 9 is out of range"):
        load_labelled(root, slices=[9], preprocessing=prep)
    (root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    with pytest.raises(BlindspotError, match="BraTS2021_00001' has no file ending in _seg.nii.gz"):
        load_labelled(root, preprocessing=prep)


def test_folder_layout_matches_masks_by_name(tmp_path):
    root = make_folder(tmp_path / "data")
    assert detect_layout(root) == "folder"
    data = load_labelled(root)
    assert data.names == ["n0.png", "n1.png", "n2.png", "a0.png", "a1.png"]
    assert data.anomalous.tolist() == [False] * 3 + [True] * 2
    np.testing.assert_array_equal(data.labels[3], read_image(root / "masks" / "a0.png") > 0)
    assert data.labels[:3].sum() == 0 and len(load_labelled(root, split="train")) == 3
    save_png(root / "masks" / "zz.png", np.ones((SIZE, SIZE)))
    with pytest.raises(BlindspotError, match="mask .*zz.png' matches no image"):
        load_labelled(root)
    (root / "masks" / "zz.png").unlink()
    (root / "masks" / "a1.png").unlink()
    with pytest.raises(BlindspotError, match="abnormal image .*a1.png' has no mask"):
        load_labelled(root)


def test_mood_folder_of_healthy_volumes(tmp_path):
    root = make_mood(tmp_path / "mood")
    assert detect_layout(root) == "mood"
    data = load_labelled(root, slices=[1, 2])
    assert data.images.shape == (6, SIZE, SIZE) and not data.anomalous.any() and data.labels is None
    assert data.volumes == ["case_0.nii.gz"] * 2 + ["case_1.nii.gz"] * 2 + ["case_2.nii.gz"] * 2


def test_preprocessing_resize_crop_equalize(tmp_path):
    root = make_benchmark(tmp_path / "RSNA")
    raw = load_labelled(root)
    prep = Preprocessing(crop=20, resize=10, equalize=True)
    data = load_labelled(root, preprocessing=prep)
    expected = equalize_histogram(resize(center_crop(raw.images, 20), 10))
    np.testing.assert_allclose(data.images, expected, atol=1e-6)
    assert data.source["preprocessing"]["resize"] == 10
    masks = resize(np.ones((2, 7, 5), bool), 4, labels=True)
    assert masks.dtype == bool and masks.shape == (2, 4, 4) and masks.all()
    no_brain = load_labelled(root, preprocessing=Preprocessing(foreground=False))
    assert no_brain.brain is None
    with pytest.raises(BlindspotError, match="--crop must be an integer in"):
        load_labelled(root, preprocessing=Preprocessing(crop=99))


def test_volume_regex_groups_slices(tmp_path):
    root = make_brats2021(tmp_path / "b")
    data = load_labelled(root, volume_regex=r"(BraTS2021_\d)")
    assert data.volumes == ["BraTS2021_1", "BraTS2021_1", "BraTS2021_2", "BraTS2021_2", "BraTS2021_2"]
    with pytest.raises(BlindspotError, match="does not match the name"):
        load_labelled(root, volume_regex="nomatch")


def test_wrong_layouts_and_bad_files(tmp_path):
    with pytest.raises(BlindspotError, match="does not exist"):
        detect_layout(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlindspotError, match="matches no known layout"):
        detect_layout(tmp_path / "empty")
    root = make_benchmark(tmp_path / "RSNA")
    (root / "data.json").write_text(json.dumps({"train": {"0": []}}))
    with pytest.raises(BlindspotError, match=r"data.json' has no \"test\" → \"0\" list"):
        load_labelled(root)
    (root / "data.json").write_text("{not json")
    with pytest.raises(BlindspotError, match="is not valid JSON"):
        load_labelled(root)
    (root / "data.json").write_text(json.dumps({"test": {"0": ["gone.png"], "1": []}}))
    with pytest.raises(BlindspotError, match="gone.png' is listed in .* but does not exist"):
        load_labelled(root)
    (root / "images" / "bad.png").write_bytes(b"\x89PNG not really")
    (root / "data.json").write_text(json.dumps({"test": {"0": ["bad.png"], "1": []}}))
    with pytest.raises(BlindspotError, match="bad.png' is not a readable image file"):
        load_labelled(root)
    save_png(root / "images" / "big.png", np.zeros((30, 30)))
    (root / "data.json").write_text(json.dumps({"test": {"0": ["test0_0.png", "big.png"], "1": []}}))
    with pytest.raises(BlindspotError, match="pass --resize N"):
        load_labelled(root)
    with pytest.raises(BlindspotError, match="--layout must be one of"):
        load_labelled(root, layout="kaggle")
