"""The embedded MNI152 template: fixed, disjoint axial slices per split, on a 256 × 256 canvas."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.exposure import equalize_hist

from blindspot.data import DataConfig, Preparation, load
from blindspot.data.mni152 import CANVAS, TEST_SLICES, TRAIN_SLICES, VALIDATION_SLICES, load_mni152_volume, mni152_slices, to_canvas
from blindspot.data.preprocess import fit_geometry, foreground_mask, normalize_percentile
from blindspot.errors import BlindspotError


@pytest.fixture(scope="module")
def template_set():
    return load(DataConfig())


def test_split_slices_are_fixed_and_disjoint():
    assert TEST_SLICES == tuple(range(60, 97, 4)) == (60, 64, 68, 72, 76, 80, 84, 88, 92, 96)
    assert VALIDATION_SLICES == tuple(range(62, 99, 4))
    assert len(TRAIN_SLICES) == 40 and len(VALIDATION_SLICES) == 10 and CANVAS == 256
    train, val, test = set(TRAIN_SLICES), set(VALIDATION_SLICES), set(TEST_SLICES)
    assert not (train & test) and not (val & test) and not (train & val)
    assert train | val | test == set(range(50, 110))


def test_mni152_default_test_set(template_set):
    images = template_set.images
    assert images.shape == (len(TEST_SLICES), 256, 256)
    assert images.dtype == np.float32
    assert images.min() == 0 and images.max() <= 1
    assert ((images > 0).mean(axis=(1, 2)) > 0.25).all()  # central slices: the brain fills the canvas
    assert (images[:, :5, :] == 0).all()  # background around the brain
    assert template_set.names[0] == "mni152[axis=2, slice=60]" and template_set.volumes == template_set.names
    assert template_set.labels is None and template_set.anomalous is None and template_set.scale == 1.0
    np.testing.assert_array_equal(template_set.brain, foreground_mask(images))
    source = template_set.source
    assert (source["data"], source["layout"], source["split"], source["files"]) == ("mni152", "mni152", "all", [])
    assert source["slices"] == list(TEST_SLICES) and source["images"] == 10


def test_splits_take_their_slices(template_set):
    volume = load_mni152_volume()
    assert volume.shape == (197, 233, 189) and not volume.flags.writeable
    test = load(DataConfig(split="test"))
    np.testing.assert_array_equal(test.images, template_set.images)  # all = test for the one template brain
    train = load(DataConfig(split="train"))
    assert len(train) == 40 and train.source["slices"] == list(TRAIN_SLICES)
    assert [int(n.split("slice=")[1][:-1]) for n in train.names] == list(TRAIN_SLICES)
    np.testing.assert_array_equal(train.images[0], to_canvas(np.rot90(volume[:, :, TRAIN_SLICES[0]])))
    val, names, slices = mni152_slices(split="validation")
    assert slices == list(VALIDATION_SLICES) and val.shape == (10, 256, 256) and names[-1] == "mni152[axis=2, slice=98]"


def test_explicit_slices_axes_and_normalisation():
    volume = load_mni152_volume()
    sagittal = load(DataConfig(axis=0, slices=(98,)))
    np.testing.assert_array_equal(sagittal.images[0], to_canvas(np.rot90(volume[98])))
    assert sagittal.names == ["mni152[axis=0, slice=98]"]
    normalized = load(DataConfig(slices=(80,), preparation=Preparation(normalize=50)))
    expected = to_canvas(np.rot90(normalize_percentile(volume, 50)[:, :, 80]))
    np.testing.assert_array_equal(normalized.images[0], expected)
    assert normalized.images.max() == 1


def test_size_and_equalisation_follow_the_pipeline_order(template_set):
    prepared = load(DataConfig(preparation=Preparation(size=64, equalize=True)))
    resized, scale = fit_geometry(template_set.images, 64)
    assert prepared.scale == scale == 0.25 and prepared.source["scale"] == 0.25
    for got, image in zip(prepared.images, resized):
        mask = image > 0
        np.testing.assert_array_equal(got, np.where(mask, equalize_hist(image, nbins=256, mask=mask), 0).astype(np.float32))
    np.testing.assert_array_equal(prepared.brain, foreground_mask(prepared.images))


def test_bad_template_slices():
    with pytest.raises(BlindspotError, match=r"slice 200 is out of range for the mni152 template along axis 2 \(0..188\)"):
        load(DataConfig(slices=(80, 200)))
    with pytest.raises(BlindspotError, match="the mni152 splits are axial slices; give `slices` with `axis` 0 or 1"):
        load(DataConfig(axis=1))


def test_to_canvas_centres_pads_and_crops():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = to_canvas(image, 6)
    np.testing.assert_array_equal(out[1:4, 1:5], image)
    assert out.sum() == image.sum()
    np.testing.assert_array_equal(to_canvas(np.arange(64.0).reshape(8, 8), 4), np.arange(64.0).reshape(8, 8)[2:6, 2:6])
