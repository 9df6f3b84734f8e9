"""The MedIAnomaly benchmark's two PNG layouts: ``benchmark`` (data.json + images/) and ``brats2021``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import SIZE, brain_slice, lesion, make_benchmark, make_brats2021, save_png
from PIL import Image
from skimage.exposure import equalize_hist

from blindspot.data import DataConfig, Preparation, detect_layout, load
from blindspot.data.io import read_image
from blindspot.data.preprocess import equalize_histogram, fit_geometry, foreground_mask, normalize_percentile
from blindspot.errors import BlindspotError

BENCHMARK_SPLITS = {
    "train": (["train0_0.png", "train0_1.png", "train0_2.png", "train0_3.png"], [False] * 4),
    "test": (["test0_0.png", "test0_1.png", "test0_2.png", "test1_0.png", "test1_1.png", "test1_2.png"], [False] * 3 + [True] * 3),
}
BENCHMARK_SPLITS["all"] = tuple(a + b for a, b in zip(BENCHMARK_SPLITS["train"], BENCHMARK_SPLITS["test"]))


def load_from(root, **options):
    return load(DataConfig(data=str(root), **options))


# --- benchmark: data.json + images/ -----------------------------------------------------------


@pytest.mark.parametrize("split", ["all", "train", "test"])
def test_benchmark_splits(tmp_path, split):
    root = make_benchmark(tmp_path / "RSNA")
    assert detect_layout(str(root)) == "benchmark"
    data = load_from(root, split=split)
    names, flags = BENCHMARK_SPLITS[split]
    assert data.names == names and data.volumes == names and data.anomalous.tolist() == flags
    assert data.images.shape == (len(names), SIZE, SIZE) and data.images.dtype == np.float32 and data.labels is None
    assert data.source["files"] == [str(root / "data.json"), *(str(root / "images" / n) for n in names)]
    assert (data.source["layout"], data.source["split"], data.source["images"]) == ("benchmark", split, len(names))
    for image, name in zip(data.images, names):
        np.testing.assert_allclose(image, read_image(root / "images" / name))
    np.testing.assert_array_equal(data.brain, foreground_mask(data.images))


def test_benchmark_default_split_is_all_and_normal_drops_the_abnormal(tmp_path):
    root = make_benchmark(tmp_path / "RSNA")
    data = load_from(root)
    assert data.source["split"] == "all" and len(data) == 10
    assert data.normal().names == BENCHMARK_SPLITS["train"][0] + BENCHMARK_SPLITS["test"][0][:3]


def test_preparation_order_normalise_geometry_equalise(tmp_path):
    root = make_benchmark(tmp_path / "RSNA")
    raw = load_from(root, split="test")
    data = load_from(root, split="test", preparation=Preparation(size=10, geometry="crop", equalize=True))
    resized, scale = fit_geometry(raw.images, 10, "crop")
    for got, image in zip(data.images, resized):  # equalisation happens after resizing
        mask = image > 0
        np.testing.assert_array_equal(got, np.where(mask, equalize_hist(image, nbins=256, mask=mask), 0).astype(np.float32))
    assert not np.allclose(data.images, fit_geometry(equalize_histogram(raw.images), 10, "crop")[0], atol=1e-3)
    assert data.scale == scale == 10 / SIZE and data.source["config"]["preparation"]["geometry"] == "crop"
    np.testing.assert_array_equal(data.brain, foreground_mask(data.images))
    normalized = load_from(root, split="test", preparation=Preparation(normalize=90, size=12))
    expected = np.stack([fit_geometry(normalize_percentile(image, 90), 12)[0] for image in raw.images])
    np.testing.assert_array_equal(normalized.images, expected)  # per image, before resizing
    after = normalize_percentile(fit_geometry(raw.images[0], 12)[0], 90)
    assert not np.allclose(normalized.images[0], after, atol=1e-4)


def test_images_of_different_sizes_need_a_size(tmp_path):
    root = make_benchmark(tmp_path / "RSNA")
    save_png(root / "images" / "big.png", brain_slice(np.random.default_rng(1), 30))
    (root / "data.json").write_text(json.dumps({"test": {"0": ["test0_0.png", "big.png"], "1": []}}))
    with pytest.raises(BlindspotError, match=r"'.*big.png' has size \(30, 30\) but '.*test0_0.png' has \(24, 24\); set `size`"):
        load_from(root, split="test")
    both = load_from(root, split="test", preparation=Preparation(size=16))
    assert both.images.shape == (2, 16, 16) and both.scale == pytest.approx((16 / 24 + 16 / 30) / 2)


def test_colour_png_loads_as_grey_with_a_warning(tmp_path):
    root = make_benchmark(tmp_path / "RSNA")
    grey = read_image(root / "images" / "test0_0.png")
    rgb = np.repeat(np.round(grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(rgb).save(root / "images" / "test0_0.png")
    with pytest.warns(UserWarning, match="colour images were converted to grey"):
        data = load_from(root, split="test")
    np.testing.assert_array_equal(data.images[0], grey)


def test_wrong_manifests_and_bad_files(tmp_path):
    root = make_benchmark(tmp_path / "RSNA")
    (root / "data.json").write_text(json.dumps({"train": {"0": []}}))
    with pytest.raises(BlindspotError, match=r"data.json' has no \"test\" → \"0\" list"):
        load_from(root)
    (root / "data.json").write_text(json.dumps({"train": {"0": "x.png"}, "test": {"0": [], "1": []}}))
    with pytest.raises(BlindspotError, match=r"\"train\" → \"0\" must be a list of file names"):
        load_from(root)
    (root / "data.json").write_text("{not json")
    with pytest.raises(BlindspotError, match="is not valid JSON"):
        load_from(root)
    (root / "data.json").write_text(json.dumps({"test": {"0": ["gone.png"], "1": []}}))
    with pytest.raises(BlindspotError, match="gone.png' is listed in .* but does not exist"):
        load_from(root, split="test")
    (root / "data.json").write_text(json.dumps({"train": {"0": []}, "test": {"0": [], "1": []}}))
    with pytest.raises(BlindspotError, match="data.json' lists no image for the train split"):
        load_from(root, split="train")
    (root / "images" / "bad.png").write_bytes(b"\x89PNG not really")
    (root / "data.json").write_text(json.dumps({"test": {"0": ["bad.png"], "1": []}}))
    with pytest.raises(BlindspotError, match="bad.png' is not a readable image file"):
        load_from(root, split="test")
    (root / "data.json").unlink()
    with pytest.raises(BlindspotError, match=r"data.json' does not exist; the benchmark layout needs DIR/data.json and DIR/images/"):
        load_from(root, layout="benchmark")
    with pytest.raises(BlindspotError, match="`layout` must be auto or one of"):
        load_from(root, layout="kaggle")


# --- brats2021: train/, test/normal|tumor, test/annotation -------------------------------------


BRATS_TRAIN = [f"BraTS2021_0000{k}_flair_60.png" for k in range(4)]
BRATS_TEST = ["BraTS2021_10000_flair_30.png", "BraTS2021_10001_flair_30.png",
              *(f"BraTS2021_2000{k}_flair_70.png" for k in range(3))]


@pytest.mark.parametrize(
    ("split", "names", "flags"),
    [
        ("train", BRATS_TRAIN, [False] * 4),
        ("test", BRATS_TEST, [False, False, True, True, True]),
        ("all", BRATS_TRAIN + BRATS_TEST, [False] * 6 + [True] * 3),
    ],
)
def test_brats2021_splits_pair_flair_with_seg(tmp_path, split, names, flags):
    root = make_brats2021(tmp_path / "BraTS2021")
    assert detect_layout(str(root)) == "brats2021"
    data = load_from(root, split=split)
    assert data.names == names and data.volumes == names and data.anomalous.tolist() == flags
    assert data.images.shape == (len(names), SIZE, SIZE)
    masks = [root / "test" / "annotation" / n.replace("flair", "seg") for n in names if "_2000" in n]
    folders = {"60": root / "train", "30": root / "test" / "normal", "70": root / "test" / "tumor"}
    files = [folders[n[-6:-4]] / n for n in names]
    assert data.source["files"] == [str(f) for f in files] + [str(m) for m in masks]
    for image, file in zip(data.images, files):
        np.testing.assert_allclose(image, read_image(file))
    if split == "train":
        assert data.labels is None
        return
    assert data.labels.dtype == bool and not data.labels[~data.anomalous].any()
    for k in np.flatnonzero(data.anomalous):
        mask = read_image(root / "test" / "annotation" / data.names[k].replace("flair", "seg")) > 0
        np.testing.assert_array_equal(data.labels[k], mask)
        assert mask.any()


def test_brats2021_labels_are_resized_nearest_and_stay_bool(tmp_path):
    root = make_brats2021(tmp_path / "BraTS2021")
    raw = load_from(root, split="test")
    data = load_from(root, split="test", preparation=Preparation(size=12))
    assert data.labels.dtype == bool and data.labels.shape == (5, 12, 12)
    np.testing.assert_array_equal(data.labels, fit_geometry(raw.labels, 12, labels=True)[0])
    np.testing.assert_array_equal(data.images, fit_geometry(raw.images, 12)[0])
    assert data.labels[2:].any(axis=(1, 2)).all()


def test_brats2021_skips_hidden_files(tmp_path):
    root = make_brats2021(tmp_path / "BraTS2021")
    for folder in ("train", "test/normal", "test/tumor", "test/annotation"):
        (root / folder / "._BraTS2021_20000_flair_70.png").write_bytes(b"\0\5\26\7 resource fork")
        (root / folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    data = load_from(root)
    assert data.names == BRATS_TRAIN + BRATS_TEST


def test_brats2021_missing_masks(tmp_path):
    root = make_brats2021(tmp_path / "BraTS2021")
    save_png(root / "test" / "annotation" / "BraTS2021_10000_seg_30.png", lesion())  # a normal slice may have a mask
    data = load_from(root, split="test")
    np.testing.assert_array_equal(data.labels[0], lesion())
    (root / "test" / "annotation" / "BraTS2021_20001_seg_70.png").unlink()
    with pytest.raises(BlindspotError, match="tumour slice .*BraTS2021_20001_flair_70.png' has no mask"):
        load_from(root)
    assert len(load_from(root, split="train")) == 4  # the training split reads no mask
    save_png(root / "test" / "annotation" / "BraTS2021_20001_seg_70.png", np.zeros((10, 10)))
    with pytest.raises(BlindspotError, match=r"mask '.*BraTS2021_20001_seg_70.png' has size \(10, 10\) but its image "
                                             r"'.*BraTS2021_20001_flair_70.png' has \(24, 24\)"):
        load_from(root)
    for mask in (root / "test" / "annotation").iterdir():
        mask.unlink()
    (root / "test" / "annotation").rmdir()
    with pytest.raises(BlindspotError, match="folder '.*annotation' does not exist; the brats2021 layout needs test/annotation/"):
        load_from(root, split="test")


def test_brats2021_without_training_images(tmp_path):
    root = make_brats2021(tmp_path / "BraTS2021", n_train=0)
    (root / "train").mkdir()
    with pytest.raises(BlindspotError, match=r"holds no image for the train split of the brats2021 layout"):
        load_from(root, split="train")
