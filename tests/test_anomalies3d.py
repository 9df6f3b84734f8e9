"""3-D anomalies (blindspot.anomalies3d): the protocol's formulas with three coordinates, checked against slow
per-voxel statements, and against the 2-D anomalies on the central slice."""

from __future__ import annotations

import numpy as np
import pytest

from blindspot.anomalies import TEXTURES, disk_anomaly, texture_anomaly
from blindspot.anomalies3d import (
    ball_anomaly,
    ball_box,
    ball_masks,
    ball_radii,
    ball_voxels,
    check_volume_centers,
    sample_volume_center,
    sample_volume_centers,
    texture_anomaly_3d,
    texture_values,
)
from blindspot.errors import BlindspotError

from conftest import brain_volume


@pytest.fixture(scope="module")
def volumes():
    return np.stack([brain_volume((30, 34, 26), seed=k) for k in range(3)])


def literal_ball(shape, center, radii):
    """Every voxel with Σ ((p − c) / r)² < 1, by brute force over the whole volume."""
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) < 1


def per_voxel_deformation(volume, center, radii, kind):
    """The protocol's per-pixel statement of sink and source with three coordinates, as a slow loop."""
    out = volume.copy()
    label = literal_ball(volume.shape, center, radii) & (volume > 0)
    c = np.asarray(center, float)
    unit = max(radii)
    for p in zip(*np.nonzero(label)):
        p = np.array(p, float)
        s = (np.linalg.norm((p - c) * unit / np.asarray(radii)) / unit) ** 2
        q = c + s * (p - c) if kind == "source" else p + (1 - s) * (p - c)
        q = np.clip(np.round(q), 0, np.array(volume.shape) - 1).astype(int)
        out[tuple(p.astype(int))] = volume[tuple(q)]
    return out


@pytest.mark.parametrize("radii", [(5, 5, 5), (1.5, 1.5, 1.5), (6.5, 4, 2.5)])
def test_ball_equals_brute_force_also_across_the_border(radii):
    shape = (20, 22, 18)
    radii = ball_radii(radii)
    for center in ([10, 11, 9], [0, 0, 0], [19, 21, 17], [2, 20, 9]):  # the last three cross the border
        masks = ball_masks(shape, np.array([center]), radii)
        np.testing.assert_array_equal(masks[0], literal_ball(shape, center, radii))
        box = ball_box(shape, center, radii)
        assert masks[0][box].sum() == masks[0].sum()  # the box holds the whole ball


def test_ball_anomaly_and_labels_follow_the_protocol(volumes):
    result = ball_anomaly(volumes, 0.37, radius=6, rng=4)
    for volume, out, label, center in zip(volumes, result.images, result.labels, result.centers):
        ball = literal_ball(volume.shape, center, (6, 6, 6))
        expected = volume.copy()
        expected[ball] = np.float32(0.37)
        expected *= volume > 0  # image and label multiplied by the foreground
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(label, ball & (volume > 0))
        assert volume[tuple(center)] > 0
    assert result.centers.shape == (3, 3) and result.centers.dtype == np.int64


def test_a_ball_at_the_brain_edge_is_restricted_to_the_foreground(volumes):
    volume = volumes[0]
    edge = np.argwhere(volume > 0)[0]  # the first foreground voxel in raster order: on the border of the brain
    result = ball_anomaly(volume[None], 1.0, radius=5, centers=[edge])
    ball = literal_ball(volume.shape, edge, (5, 5, 5))
    assert (ball & (volume == 0)).any()  # part of the ball is background ...
    assert not result.labels[0][volume == 0].any()  # ... and is neither label nor changed
    np.testing.assert_array_equal(result.images[0][volume == 0], 0)


def test_centres_are_uniform_over_the_foreground_and_seeded():
    volume = np.zeros((4, 5, 6), np.float32)
    volume[1, 2, 3] = volume[3, 4, 0] = volume[0, 0, 5] = 0.5
    centers = sample_volume_centers(np.repeat(volume[None], 3000, axis=0), rng=0)
    picked, counts = np.unique(centers, axis=0, return_counts=True)
    np.testing.assert_array_equal(picked, [[0, 0, 5], [1, 2, 3], [3, 4, 0]])
    assert counts.min() > 900  # ~1000 each
    np.testing.assert_array_equal(sample_volume_centers(volume[None], rng=5), sample_volume_centers(volume[None], rng=5))


def test_a_stack_and_one_volume_at_a_time_give_the_same_centres_and_shuffles(volumes):
    rng = np.random.default_rng(7)
    one_by_one = [sample_volume_center(v, rng) for v in volumes]
    np.testing.assert_array_equal(sample_volume_centers(volumes, 7), one_by_one)
    centers = np.stack(one_by_one)
    stack = texture_anomaly_3d(volumes, "shuffle", radius=5, centers=centers, rng=11)
    rng = np.random.default_rng(11)
    for n, volume in enumerate(volumes):
        single = texture_anomaly_3d(volume[None], "shuffle", radius=5, centers=centers[n : n + 1], rng=rng)
        np.testing.assert_array_equal(single.images[0], stack.images[n])


def test_centres_on_chosen_slices():
    volume = brain_volume((20, 20, 16), seed=1)
    rng = np.random.default_rng(0)
    centers = np.stack([sample_volume_center(volume, rng, axis=1, slices=[9, 10]) for _ in range(200)])
    assert set(centers[:, 1]) == {9, 10} and all(volume[tuple(c)] > 0 for c in centers)
    with pytest.raises(BlindspotError, match="case.nii has an empty foreground on slices 0, 15 along axis 2"):
        sample_volume_center(volume, rng, axis=2, slices=[0, 15], name="case.nii")


@pytest.mark.parametrize("kind", ["sink", "source"])
@pytest.mark.parametrize("radii", [(6, 6, 6), (6, 3, 4.5)])
def test_deformations_equal_the_per_voxel_statement(volumes, kind, radii):
    centers = np.array([[15, 17, 13], [3, 17, 13]])  # the second crosses the brain border
    result = texture_anomaly_3d(volumes[:2], kind, radius=radii, centers=centers)
    for volume, out, center in zip(volumes, result.images, centers):
        np.testing.assert_array_equal(out, per_voxel_deformation(volume, center, radii, kind))
    assert not np.array_equal(result.images[0], volumes[0])


def test_shuffle_permutes_values_inside_the_label_only(volumes):
    result = texture_anomaly_3d(volumes, "shuffle", radius=6, rng=3)
    for volume, out, label in zip(volumes, result.images, result.labels):
        np.testing.assert_array_equal(out[~label], volume[~label])
        np.testing.assert_array_equal(np.sort(out[label]), np.sort(volume[label]))
        assert not np.array_equal(out[label], volume[label])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_central_slice_of_a_3d_anomaly_is_the_2d_anomaly(volumes, axis):
    """The ball's cross-section through its centre is the protocol's disk, and in that plane the 3-D
    sink and source displacements have no out-of-plane part: the 2-D formulas, bitwise."""
    volume, center = volumes[1], np.array([15, 17, 13])
    plane = np.take(volume, center[axis], axis=axis)[None]
    center_2d = np.delete(center, axis)[None]
    disk = disk_anomaly(plane, 0.9, radius=6, centers=center_2d)
    ball = ball_anomaly(volume[None], 0.9, radius=6, centers=[center])
    np.testing.assert_array_equal(np.take(ball.images[0], center[axis], axis=axis), disk.images[0])
    np.testing.assert_array_equal(np.take(ball.labels[0], center[axis], axis=axis), disk.labels[0])
    for kind in ("sink", "source"):
        flat = texture_anomaly(plane, kind, radius=6, centers=center_2d).images[0]
        deep = texture_anomaly_3d(volume[None], kind, radius=6, centers=[center]).images[0]
        np.testing.assert_array_equal(np.take(deep, center[axis], axis=axis), flat)


def test_values_at_the_label_are_those_of_the_anomalous_volume(volumes):
    center = np.array([14, 16, 12])
    index = ball_voxels(volumes[0], center, 5)
    for kind in TEXTURES:
        full = texture_anomaly_3d(volumes[:1], kind, radius=5, centers=[center], rng=2).images[0]
        np.testing.assert_array_equal(texture_values(volumes[0], kind, index, center, 5, np.random.default_rng(2)),
                                      full[index])


def test_inputs_are_left_alone(volumes):
    before = volumes.copy()
    ball_anomaly(volumes, 1.0, radius=4, rng=0)
    for kind in TEXTURES:
        texture_anomaly_3d(volumes, kind, radius=4, rng=0)
    np.testing.assert_array_equal(volumes, before)


def test_bad_arguments_are_one_sentence(volumes):
    with pytest.raises(BlindspotError, match="`radius` must be a positive number or three"):
        ball_radii((1, 2))
    with pytest.raises(BlindspotError, match="`radius` must be a positive number"):
        ball_anomaly(volumes, 1.0, radius=0, rng=0)
    with pytest.raises(BlindspotError, match=r"`centers` must be integers of shape \(3, 3\)"):
        ball_anomaly(volumes, 1.0, centers=[[1, 2]])
    with pytest.raises(BlindspotError, match=r"`centers` row 0 \[40, 0, 0\] lies outside volume 0 of shape \(30, 34, 26\)"):
        check_volume_centers([[40, 0, 0]], [volumes[0].shape])
    with pytest.raises(BlindspotError, match=r"volumes must have shape \(N, X, Y, Z\)"):
        ball_anomaly(volumes[0], 1.0)
    with pytest.raises(BlindspotError, match="volume 0 has an empty foreground"):
        sample_volume_centers(np.zeros((1, 4, 4, 4), np.float32), 0)
    with pytest.raises(BlindspotError, match="unknown texture 'swirl'"):
        texture_anomaly_3d(volumes, "swirl")
