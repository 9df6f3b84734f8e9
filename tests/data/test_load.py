"""The dispatcher of blindspot.data: detect_layout, resolve, load, load_training, holdout, volume_regex."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import brain_volume, save_nifti
from eval_fixtures import make_benchmark, make_brats2021, make_brats_nifti, make_folder, make_mood

from blindspot.data import DataConfig, ImageSet, Preparation, detect_layout, holdout, load, load_training, resolve
from blindspot.data import volumes_from_names
from blindspot.data.mni152 import TEST_SLICES, TRAIN_SLICES, VALIDATION_SLICES
from blindspot.errors import BlindspotError

MAKERS = {"benchmark": make_benchmark, "brats2021": make_brats2021, "brats": make_brats_nifti, "folder": make_folder,
          "nifti": make_mood}


@pytest.mark.parametrize("layout", list(MAKERS))
def test_detect_layout_and_resolve(tmp_path, layout):
    root = MAKERS[layout](tmp_path / "data")
    assert detect_layout(str(root)) == layout
    resolved = resolve(DataConfig(data=str(root)))
    assert (resolved.layout, resolved.split) == (layout, "all")
    assert resolve(DataConfig(data=str(root)), default_split="train").split == "train"
    assert resolve(DataConfig(data=str(root), split="test"), default_split="train").split == "test"
    assert resolve(DataConfig(data=str(root), layout=layout)).layout == layout


def test_detect_layout_of_the_template_and_of_single_files(tmp_path):
    assert detect_layout("mni152") == "mni152"
    save_nifti(tmp_path / "v.nii.gz", brain_volume((8, 8, 4)))
    assert detect_layout(str(tmp_path / "v.nii.gz")) == "nifti"
    (tmp_path / "._w.nii.gz").write_bytes(b"hidden")
    (tmp_path / "v.nii.gz").unlink()
    with pytest.raises(BlindspotError, match="matches no known layout"):  # hidden files do not make a layout
        detect_layout(str(tmp_path))


def test_wrong_layouts(tmp_path):
    with pytest.raises(BlindspotError, match="does not exist; expected 'mni152', a NIfTI file or a data set folder"):
        detect_layout(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlindspotError, match=r"matches no known layout; expected data.json \+ images/ \(benchmark\)"):
        detect_layout(str(tmp_path / "empty"))
    with pytest.raises(BlindspotError, match="`layout` mni152 goes with `data` mni152 only; got data '.*empty' with layout mni152"):
        resolve(DataConfig(data=str(tmp_path / "empty"), layout="mni152"))
    with pytest.raises(BlindspotError, match="`layout` mni152 goes with `data` mni152 only; got data 'mni152' with layout nifti"):
        resolve(DataConfig(layout="nifti"))
    with pytest.raises(BlindspotError, match="`split` must be one of all, train, test; got 'val'"):
        resolve(DataConfig(), default_split="val")
    root = make_benchmark(tmp_path / "RSNA")
    with pytest.raises(BlindspotError, match=r"'.*train' does not exist"):  # an explicit layout is taken at its word
        load(DataConfig(data=str(root), layout="brats2021", split="train"))


@pytest.mark.parametrize("layout", list(MAKERS))
def test_load_records_what_it_read(tmp_path, layout):
    root = MAKERS[layout](tmp_path / "data")
    prep = Preparation(size=32, normalize=99 if layout == "brats" else None)
    config = DataConfig(data=str(root), slices=(1, 2) if layout == "nifti" else None, preparation=prep)
    data = load(config)
    source = data.source
    assert source["data"] == str(root) and source["layout"] == layout and source["split"] == "all"
    assert source["config"] == resolve(config).record() and source["images"] == len(data) and source["scale"] == data.scale
    assert data.scale == pytest.approx(32 / 24) and data.images.shape[1:] == (32, 32)
    assert source["files"] and all((root / f).exists() and f.startswith(str(root)) for f in source["files"])
    assert data.brain is not None and data.brain.dtype == bool


def test_volume_regex_groups_slices(tmp_path):
    root = make_brats2021(tmp_path / "b")
    data = load(DataConfig(data=str(root), split="test", volume_regex=r"(BraTS2021_\d)"))
    assert data.volumes == ["BraTS2021_1", "BraTS2021_1", "BraTS2021_2", "BraTS2021_2", "BraTS2021_2"]
    assert data.source["config"]["volume_regex"] == r"(BraTS2021_\d)"
    with pytest.raises(BlindspotError, match=r"`volume_regex` 'BraTS2021_\\d' has no capture group"):
        DataConfig(data=str(root), split="test", volume_regex=r"BraTS2021_\d")  # its whole match would be ambiguous
    with pytest.raises(BlindspotError, match=r"`volume_regex` '\(nomatch\)' does not match the name 'BraTS2021_00000_flair_60.png'"):
        load(DataConfig(data=str(root), volume_regex="(nomatch)"))
    with pytest.raises(BlindspotError, match=r"`volume_regex` '\(' is not a valid regular expression"):
        load(DataConfig(data=str(root), volume_regex="("))
    assert volumes_from_names(["a_1_x", "b_22_y"], r"_(\d+)_") == ["1", "22"]


# --- hold-out and training data ------------------------------------------------------------------


def imageset(volumes):
    images = np.full((len(volumes), 4, 4), 0.5, np.float32)
    return ImageSet(images, [f"{v}[{k}]" for k, v in enumerate(volumes)], {"data": "d", "split": "train"}, volumes=volumes)


def test_holdout_takes_the_last_five_percent_of_the_volumes():
    volumes = [f"v{k:02d}" for k in range(40) for _ in range(2)]
    kept, held = holdout(imageset(volumes))
    assert sorted(set(held.volumes)) == ["v38", "v39"] and len(held) == 4 and len(kept) == 76  # round(0.05 · 40) = 2
    assert not set(kept.volumes) & set(held.volumes)
    kept, held = holdout(imageset(["a", "b", "a", "c"]))  # order of first appearance; at least one volume
    assert held.volumes == ["c"] and kept.volumes == ["a", "b", "a"]
    _, held = holdout(imageset(["a", "b", "c", "d"]), 0.5)
    assert held.volumes == ["c", "d"]
    with pytest.raises(BlindspotError, match=r"'d' has 1 volume in its train split; holding out validation images needs at least 2"):
        holdout(imageset(["a", "a"]))


def test_template_training_uses_its_fixed_slices():
    train, validation = load_training(DataConfig().with_preparation(size=32))
    assert train.images.shape == (40, 32, 32) and validation.images.shape == (10, 32, 32)
    assert train.source["slices"] == list(TRAIN_SLICES) and validation.source["slices"] == list(VALIDATION_SLICES)
    assert not set(train.source["slices"]) & set(TEST_SLICES) and not set(validation.source["slices"]) & set(TEST_SLICES)
    assert not set(train.source["slices"]) & set(validation.source["slices"])
    assert train.images[:, 0, :].max() == 0  # background stays exactly 0 after resizing
    assert load_training(DataConfig(), hold_out=False)[0].source["slices"] == list(TRAIN_SLICES)  # fixed either way
    with pytest.raises(BlindspotError, match="`slices` and `axis` do not apply to training on the embedded template"):
        load_training(DataConfig(slices=(80,)))
    with pytest.raises(BlindspotError, match="`slices` and `axis` do not apply to training on the embedded template"):
        load_training(DataConfig(axis=1))


def test_nifti_folder_holds_out_the_last_volumes_for_validation(nifti_folder):
    config = DataConfig(data=str(nifti_folder), slices=(10, 11, 12)).with_preparation(size=32)
    train, validation = load_training(config)
    assert [f.rsplit("/", 1)[1] for f in validation.source["files"]] == ["case_002.nii.gz"]  # train split: 3 of 5 volumes
    assert [f.rsplit("/", 1)[1] for f in train.source["files"]] == ["case_000.nii.gz", "case_001.nii.gz"]
    assert sorted(set(validation.volumes)) == ["case_002.nii.gz"] and validation.source["images"] == 3
    assert sorted(set(train.volumes)) == ["case_000.nii.gz", "case_001.nii.gz"] and train.source["slices"] == [10, 11, 12]
    assert train.source["images"] == 6
    assert train.images.shape == (6, 32, 32) and validation.images.shape == (3, 32, 32)
    every, same = load_training(config, hold_out=False)
    assert sorted(set(every.volumes)) == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"] and len(every) == 9
    np.testing.assert_array_equal(same.images, validation.images)  # still validates on the last volumes
    all_split = DataConfig(data=str(nifti_folder), split="all", slices=(10, 11, 12))
    train, validation = load_training(all_split)
    assert [f.rsplit("/", 1)[1] for f in validation.source["files"]] == ["case_004.nii.gz"]
    assert len(train.source["files"]) == 4 and train.source["slices"] == [10, 11, 12]
    assert sorted(set(validation.volumes)) == ["case_004.nii.gz"] and len(set(train.volumes)) == 4
    with pytest.raises(BlindspotError, match=r"has 1 volume in its all split; holding out validation images needs at least 2"):
        load_training(DataConfig(data=str(nifti_folder / "case_000.nii.gz"), split="all", slices=(10,)))
    with pytest.raises(BlindspotError, match=r"the train split of 1 volume\(s\) is empty; use split all"):
        load_training(DataConfig(data=str(nifti_folder / "case_000.nii.gz"), slices=(10,)))


@pytest.mark.parametrize(
    ("layout", "train_names", "validation_names"),
    [
        ("benchmark", ["train0_0.png", "train0_1.png", "train0_2.png"], ["train0_3.png"]),
        ("brats2021", [f"BraTS2021_0000{k}_flair_60.png" for k in range(3)], ["BraTS2021_00003_flair_60.png"]),
        ("folder", ["t0.png", "t1.png"], ["t2.png"]),
    ],
)
def test_png_layouts_train_on_their_training_images(tmp_path, layout, train_names, validation_names):
    root = MAKERS[layout](tmp_path / "data")
    train, validation = load_training(DataConfig(data=str(root)))
    assert train.names == train_names and validation.names == validation_names
    assert [f.rsplit("/", 1)[1] for f in validation.source["files"] if not f.endswith("data.json")] == validation_names
    assert [f.rsplit("/", 1)[1] for f in train.source["files"] if not f.endswith("data.json")] == train_names
    assert (str(root / "data.json") in train.source["files"]) == (str(root / "data.json") in validation.source["files"])
    assert train.source["split"] == "train" and not train.anomalous.any() and not validation.anomalous.any()
    every, _ = load_training(DataConfig(data=str(root)), hold_out=False)
    assert every.names == train_names + validation_names


def test_brats_subjects_train_on_their_healthy_slices(tmp_path):
    root = make_brats_nifti(tmp_path / "brats", n_subjects=5)
    config = DataConfig(data=str(root), preparation=Preparation(normalize=99))
    train, validation = load_training(config)
    assert sorted(set(train.volumes)) == ["BraTS2021_00000", "BraTS2021_00001"] and set(validation.volumes) == {"BraTS2021_00002"}
    assert not train.anomalous.any() and not validation.anomalous.any() and len(train) == 2 * 4  # tumour slices 2, 3 left out
    assert validation.source["files"] == [str(root / "BraTS2021_00002" / f"BraTS2021_00002_{kind}.nii.gz") for kind in ("flair", "seg")]
    assert len(train.source["files"]) == 4
    every, _ = load_training(config, hold_out=False)
    assert not every.anomalous.any() and len(every) == 3 * 4 and every.source["images"] == 12
    assert train.source["images"] == 8 and validation.source["images"] == 4
