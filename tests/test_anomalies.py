import numpy as np
import pytest
from skimage.draw import disk as skimage_disk

from blindspot.anomalies import (
    TEXTURES,
    anomaly_labels,
    disk_anomaly,
    disk_masks,
    sample_centers,
    texture_anomaly,
)
from blindspot.errors import BlindspotError


def literal_disk(shape, center, radius):
    """The original code's disk: skimage coordinates without a shape, clipped onto the border."""
    rr, cc = skimage_disk(center, radius)
    mask = np.zeros(shape, bool)
    mask[np.clip(rr, 0, shape[0] - 1), np.clip(cc, 0, shape[1] - 1)] = True
    return mask


@pytest.mark.parametrize("radius", [1.5, 7, 20, 20.5])
def test_disk_equals_skimage_with_border_clipping(radius):
    rng = np.random.default_rng(1)
    shape = (40, 50)
    centers = np.concatenate([rng.integers(0, 40, (30, 1)), rng.integers(0, 50, (30, 1))], axis=1)
    centers[:4] = [[0, 0], [39, 49], [0, 25], [20, 49]]  # disks that cross the border
    masks = disk_masks(shape, centers, radius)
    for mask, center in zip(masks, centers):
        np.testing.assert_array_equal(mask, literal_disk(shape, center, radius))


def test_disk_anomaly_matches_protocol_statement(mni_images):
    images = mni_images[:3]
    result = disk_anomaly(images, 0.37, radius=20, rng=4)
    for image, out, label, center in zip(images, result.images, result.labels, result.centers):
        disk = literal_disk(image.shape, center, 20)
        expected = image.copy()
        expected[disk] = np.float32(0.37)
        expected *= image > 0
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(label, disk & (image > 0))
        assert image[tuple(center)] > 0  # the centre lies in the foreground


def test_inputs_are_not_modified(mni_images):
    images = mni_images[:2].copy()
    for kind in TEXTURES:
        texture_anomaly(images, kind, rng=0)
    disk_anomaly(images, 1.0, rng=0)
    np.testing.assert_array_equal(images, mni_images[:2])


def test_centers_are_uniform_over_foreground_and_seeded():
    image = np.zeros((1, 6, 6), np.float32)
    image[0, 1, 2] = image[0, 4, 4] = image[0, 5, 0] = 0.5
    centers = sample_centers(np.repeat(image, 3000, axis=0), rng=0)
    picked, counts = np.unique(centers, axis=0, return_counts=True)
    np.testing.assert_array_equal(picked, [[1, 2], [4, 4], [5, 0]])
    assert counts.min() > 900  # ~1000 each
    np.testing.assert_array_equal(sample_centers(image, rng=5), sample_centers(image, rng=5))


def per_pixel_deformation(image, center, radius, kind):
    """The protocol's per-pixel statement of sink and source, as a slow loop."""
    out = image.copy()
    label = disk_masks(image.shape, center[None], radius)[0] & (image > 0)
    c = center.astype(float)
    for p in zip(*np.nonzero(label)):
        p = np.array(p, float)
        s = (np.linalg.norm(p - c) / radius) ** 2
        q = c + s * (p - c) if kind == "source" else p + (1 - s) * (p - c)
        q = np.clip(np.round(q), 0, np.array(image.shape) - 1).astype(int)
        if image[tuple(p.astype(int))] > 0:
            out[tuple(p.astype(int))] = image[tuple(q)]
    return out


@pytest.mark.parametrize("kind", ["sink", "source"])
def test_deformations_equal_per_pixel_statement(mni_images, kind):
    images = mni_images[[0, 5]]
    centers = np.array([[128, 100], [10, 200]])  # the second crosses the brain border
    result = texture_anomaly(images, kind, radius=20, centers=centers)
    for image, out, center in zip(images, result.images, centers):
        np.testing.assert_array_equal(out, per_pixel_deformation(image, center, 20, kind))
    assert not np.array_equal(result.images[0], images[0])


def test_shuffle_permutes_values_inside_label_only(mni_images):
    result = texture_anomaly(mni_images[:4], "shuffle", rng=3)
    for image, out, label in zip(mni_images[:4], result.images, result.labels):
        np.testing.assert_array_equal(out[~label], image[~label])
        np.testing.assert_array_equal(np.sort(out[label]), np.sort(image[label]))
        assert not np.array_equal(out[label], image[label])


def test_labels_restricted_to_brain(mni_images):
    centers = np.array([[45, 128]])  # near the edge of the brain: part of the disk is background
    label = anomaly_labels(mni_images[:1], centers, 20)[0]
    assert label.sum() < disk_masks(label.shape, centers, 20)[0].sum()
    assert (mni_images[0][label] > 0).all()


def test_bad_arguments():
    images = np.ones((2, 8, 8), np.float32)
    with pytest.raises(BlindspotError, match="unknown texture 'blur'"):
        texture_anomaly(images, "blur")
    with pytest.raises(BlindspotError, match=r"centers must be integers of shape \(2, 2\)"):
        disk_anomaly(images, 1.0, centers=[[1, 1]])
    with pytest.raises(BlindspotError, match="outside the image"):
        disk_anomaly(images, 1.0, centers=[[1, 1], [8, 0]])
    with pytest.raises(BlindspotError, match="empty foreground"):
        sample_centers(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(BlindspotError, match="radius must be positive"):
        disk_anomaly(images, 1.0, radius=0, rng=0)
