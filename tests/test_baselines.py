"""Training-free baselines (blindspot.baselines): the image itself and the per-pixel z-score."""

from __future__ import annotations

import numpy as np
import pytest

from blindspot.baselines import BASELINES, ZScore, baseline_maps, image_baseline
from blindspot.cli import as_flags, main
from blindspot.errors import BlindspotError

from eval_fixtures import brain_slice, make_brats2021, save_png


def test_image_baseline_is_a_float32_copy():
    images = np.random.default_rng(0).random((2, 5, 5))
    maps = image_baseline(images)
    assert maps.dtype == np.float32 and not np.shares_memory(maps, images)
    np.testing.assert_array_equal(maps, images.astype(np.float32))
    np.testing.assert_array_equal(baseline_maps("image", images), maps)
    assert BASELINES == ("image", "zscore")


def test_zscore_is_the_per_pixel_standard_score_with_a_floored_sigma():
    rng = np.random.default_rng(1)
    train = rng.random((6, 8, 8))
    train[:, 0, 0] = 0.25  # no variation: σ = 0 is floored
    fitted = ZScore.fit(train, min_std=0.05)
    np.testing.assert_array_equal(fitted.mean, train.mean(axis=0))
    np.testing.assert_array_equal(fitted.std, train.std(axis=0))  # population σ, float64
    assert fitted.n_images == 6 and fitted.min_std == 0.05
    test = rng.random((3, 8, 8))
    expected = ((test - train.mean(axis=0)) / np.maximum(train.std(axis=0), 0.05)).astype(np.float32)
    np.testing.assert_array_equal(fitted.maps(test), expected)
    assert fitted.maps(test)[:, 0, 0] == pytest.approx((test[:, 0, 0] - 0.25) / 0.05, rel=1e-6)
    assert (fitted.maps(test) < 0).any()  # signed: the evaluation takes |z| or its positive part
    np.testing.assert_array_equal(baseline_maps("zscore", test, train_images=train), ZScore.fit(train).maps(test))


def test_zscore_errors_name_what_to_change():
    with pytest.raises(BlindspotError, match="at least 2 healthy training images"):
        ZScore.fit(np.zeros((1, 4, 4)))
    with pytest.raises(BlindspotError, match="σ floor must be > 0"):
        ZScore.fit(np.zeros((3, 4, 4)), min_std=0)
    with pytest.raises(BlindspotError, match=r"fitted on images of size \(4, 4\) but got \(5, 5\)") as err:
        ZScore.fit(np.zeros((3, 4, 4))).maps(np.zeros((2, 5, 5)))
    assert as_flags(str(err.value)).endswith("prepare the training and test images at one --size.")
    with pytest.raises(BlindspotError, match="needs healthy training images; give `train_data`"):
        baseline_maps("zscore", np.zeros((2, 4, 4)))
    with pytest.raises(BlindspotError, match="`baseline` must be one of image, zscore; got 'mean'"):
        baseline_maps("mean", np.zeros((2, 4, 4)))


def test_cli_zscore_on_training_images_of_another_size_names_size(tmp_path, capsys):
    root = make_brats2021(tmp_path / "b")
    other = tmp_path / "other"
    rng = np.random.default_rng(0)
    for k in range(3):
        save_png(other / "train" / f"t{k}.png", brain_slice(rng, size=20))
    save_png(other / "normal" / "n0.png", brain_slice(rng, size=20))
    code = main(["evaluate", "--baseline", "zscore", "--data", str(root), "--train-data", str(other), "--out", str(tmp_path / "o"),
                 "--overlays", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "at one --size." in err, err
    code = main(["evaluate", "--baseline", "zscore", "--data", str(root), "--train-data", str(other), "--size", "24",
                 "--out", str(tmp_path / "o"), "--overlays", "0"])
    assert code == 0, capsys.readouterr().err
