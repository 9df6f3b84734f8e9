"""blindspot.data.imageset: Preparation, DataConfig (validation, prepared_like, records) and ImageSet."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blindspot.data import DataConfig, ImageSet, Preparation
from blindspot.errors import BlindspotError


def stack(n=4, size=6, seed=0):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), np.float32)
    images[:, 1:-1, 1:-1] = 0.1 + 0.9 * rng.random((n, size - 2, size - 2))
    return images


# --- Preparation and DataConfig ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 0}, "`size` must be a positive integer or None; got 0"),
        ({"size": 32.0}, "`size` must be a positive integer or None; got 32.0"),
        ({"size": True}, "`size` must be a positive integer or None; got True"),
        ({"geometry": "fit"}, "`geometry` must be one of pad, crop, stretch; got 'fit'"),
        ({"normalize": 0}, r"`normalize` must be a percentile in \(0, 100\] or None; got 0"),
        ({"normalize": 101}, r"`normalize` must be a percentile in \(0, 100\] or None; got 101"),
        ({"normalize": True}, r"`normalize` must be a percentile in \(0, 100\] or None; got True"),
        ({"equalize": 1}, "`equalize` must be True or False; got 1"),
    ],
)
def test_preparation_errors_name_the_parameter(options, message):
    with pytest.raises(BlindspotError, match=message):
        Preparation(**options)


def test_preparation_defaults_and_record():
    assert Preparation().record() == {"size": None, "geometry": "pad", "normalize": None, "equalize": False}
    numpy_values = Preparation(size=np.int64(8), normalize=np.float64(99))
    assert type(numpy_values.size) is int and type(numpy_values.normalize) is float  # checkpoints hold plain numbers
    assert numpy_values == Preparation(size=8, normalize=99)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"data": ""}, "`data` must be 'mni152' or a path; got ''"),
        ({"data": 3}, "`data` must be 'mni152' or a path; got 3"),
        ({"layout": "mood"}, "`layout` must be auto or one of mni152, nifti, benchmark, brats2021, brats, folder; got 'mood'"),
        ({"split": "val"}, "`split` must be one of all, train, test; got 'val'"),
        ({"axis": 3}, "`axis` must be 0, 1 or 2; got 3"),
        ({"axis": True}, "`axis` must be 0, 1 or 2; got True"),
        ({"slices": ()}, r"`slices` must be non-negative slice indices; got \(\)"),
        ({"slices": (3, -1)}, r"`slices` must be non-negative slice indices; got \(3, -1\)"),
        ({"slices": (1.5,)}, r"`slices` must be non-negative slice indices"),
        ({"preparation": {"size": 8}}, "`preparation` must be a Preparation; got dict"),
    ],
)
def test_data_config_errors_name_the_parameter(options, message):
    with pytest.raises(BlindspotError, match=message):
        DataConfig(**options)


def test_data_config_normalises_slices_and_changes_preparation():
    config = DataConfig(data="x", slices=[np.int64(3), 1])
    assert config.slices == (3, 1) and all(type(s) is int for s in config.slices)
    changed = config.with_preparation(size=16, equalize=True)
    assert changed.preparation == Preparation(size=16, equalize=True) and config.preparation == Preparation()
    assert changed.data == "x" and changed.slices == (3, 1)
    with pytest.raises(BlindspotError, match="`geometry` must be one of"):
        config.with_preparation(geometry="zoom")


def test_record_round_trips_through_json():
    config = DataConfig(data="/d", layout="nifti", split="test", modality="t1", axis=1, slices=(4, 5),
                        preparation=Preparation(size=32, geometry="crop", normalize=99.5, equalize=True), volume_regex=r"(\d+)")
    record = config.record()
    assert record["slices"] == [4, 5] and record["preparation"]["geometry"] == "crop"
    assert DataConfig.from_record(json.loads(json.dumps(record))) == config
    assert DataConfig.from_record(DataConfig().record()) == DataConfig()


def test_prepared_like_takes_the_model_preparation():
    trained = {"size": 64, "geometry": "crop", "normalize": 99.0, "equalize": True}
    config = DataConfig(data="d").prepared_like(trained, what="'model.pt'")
    assert config.preparation == Preparation(**trained) and config.data == "d"
    same = DataConfig(data="d", preparation=Preparation(size=64, equalize=True)).prepared_like(trained, what="m")
    assert same.preparation == Preparation(**trained)  # explicit values equal to the model's are fine
    untouched = DataConfig(data="d", preparation=Preparation(size=8))
    assert untouched.prepared_like(None, what="m") is untouched and untouched.prepared_like({}, what="m") is untouched


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"size": 32}, r"`size` 32 conflicts with the preparation 'model.pt' was trained with \(size=64\); omit it to use the model's"),
        ({"geometry": "stretch"}, r"`geometry` 'stretch' conflicts with .* \(geometry='crop'\)"),
        ({"normalize": 95.0}, r"`normalize` 95.0 conflicts with .* \(normalize=99.0\)"),
    ],
)
def test_prepared_like_refuses_a_conflict_naming_both_values(given, message):
    trained = {"size": 64, "geometry": "crop", "normalize": 99.0, "equalize": True}
    with pytest.raises(BlindspotError, match=message):
        DataConfig(data="d", preparation=Preparation(**given)).prepared_like(trained, what="'model.pt'")


def test_prepared_like_refuses_equalisation_the_model_did_not_have():
    with pytest.raises(BlindspotError, match=r"`equalize` True conflicts with .* \(equalize=False\)"):
        DataConfig(preparation=Preparation(equalize=True)).prepared_like(Preparation(size=32).record(), what="m")


# --- ImageSet ------------------------------------------------------------------------------------


def test_imageset_defaults_and_subset_keep_every_field_aligned():
    images = stack()
    labels = np.zeros(images.shape, bool)
    labels[2, 2, 2] = True
    brain = images > 0
    data = ImageSet(images, ["a", "b", "c", "d"], {"data": "x"}, labels=labels, anomalous=np.array([0, 0, 1, 1], bool),
                    brain=brain, scale=0.5)
    assert data.volumes == ["a", "b", "c", "d"] and len(data) == 4
    picked = data.subset([2, 0])
    assert picked.names == ["c", "a"] and picked.volumes == ["c", "a"] and picked.anomalous.tolist() == [True, False]
    np.testing.assert_array_equal(picked.images, images[[2, 0]])
    np.testing.assert_array_equal(picked.labels, labels[[2, 0]])
    np.testing.assert_array_equal(picked.brain, brain[[2, 0]])
    assert picked.scale == 0.5 and picked.source == {"data": "x"}
    counted = ImageSet(images, list("abcd"), {"data": "x", "images": 4})
    assert counted.subset([1, 2, 3]).source == {"data": "x", "images": 3} and counted.source["images"] == 4
    masked = data.subset(np.array([True, False, False, True]))
    assert masked.names == ["a", "d"]
    normal = data.normal()
    assert normal.names == ["a", "b"] and not normal.anomalous.any()
    unlabelled = ImageSet(images, list("abcd"), volumes=["v", "v", "w", "w"])
    assert unlabelled.normal() is unlabelled and unlabelled.subset([3]).volumes == ["w"]
    updated = data.with_images(images * 0.5, equalized=True)
    assert updated.source == {"data": "x", "equalized": True} and data.source == {"data": "x"}
    np.testing.assert_array_equal(updated.images, images * 0.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((2, 3, 3), np.float64)}, r"images must be float32 of shape \(N, H, W\); got float64"),
        ({"images": np.zeros((3, 3), np.float32)}, r"images must be float32 of shape \(N, H, W\)"),
        ({"images": np.zeros((0, 3, 3), np.float32), "names": []}, "'x' holds no image for this selection"),
        ({"names": ["a"]}, "got 1 names for 2 images"),
        ({"labels": np.zeros((2, 3, 3), np.uint8)}, r"labels must be bool of the images' shape \(2, 3, 3\); got uint8"),
        ({"brain": np.zeros((2, 3, 4), bool)}, r"brain must be bool of the images' shape \(2, 3, 3\); got bool \(2, 3, 4\)"),
        ({"anomalous": np.zeros(3, bool)}, r"anomalous must have one flag per image \(2\); got shape \(3,\)"),
        ({"volumes": ["v"]}, "got 1 volume ids for 2 images"),
        ({"scale": 0.0}, "scale must be a positive number; got 0.0"),
        ({"scale": float("nan")}, "scale must be a positive number; got nan"),
    ],
)
def test_imageset_validation(change, message):
    values = {"images": np.full((2, 3, 3), 0.5, np.float32), "names": ["a", "b"], "source": {"data": "x"}, **change}
    with pytest.raises(BlindspotError, match=message):
        ImageSet(**values)


def test_intensities_are_checked_naming_the_image():
    images = stack(3)
    images[1, 2, 2] = np.nan
    with pytest.raises(BlindspotError, match="b contains NaN or infinite values; expected finite intensities in"):
        ImageSet(images, ["a", "b", "c"])
    images = stack(3)
    images[2, 2, 2] = 1.5
    with pytest.raises(BlindspotError, match=r"c has intensities in \[0, 1.5\]; expected \[0, 1\] \(rescale with a percentile "
                                             r"normalisation: `normalize`\)"):
        ImageSet(images, ["a", "b", "c"])


def test_require_foreground_names_the_empty_image():
    images = stack(3)
    ImageSet(images, list("abc")).require_foreground()
    images[1] = 0
    with pytest.raises(BlindspotError, match="b has an empty foreground"):
        ImageSet(images, list("abc")).require_foreground()
