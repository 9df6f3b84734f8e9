import numpy as np
import pytest
from skimage.draw import disk as skimage_disk

from blindspot.anomalies import (
    KINDS,
    RADIUS_RANGE,
    SYNTHETIC_SEED,
    TEXTURES,
    anomaly_labels,
    disk_anomaly,
    disk_masks,
    sample_centers,
    synthetic_anomalies,
    synthetic_test_set,
    texture_anomaly,
)
from blindspot.data import DataConfig, ImageSet, Preparation, load
from blindspot.errors import BlindspotError


@pytest.fixture(scope="module")
def template():
    """The ten 256 px test slices of the embedded template."""
    return load(DataConfig()).images


@pytest.fixture(scope="module")
def small_set():
    """The template's test slices at 64 px, as an ImageSet with volume ids."""
    data = load(DataConfig(preparation=Preparation(size=64)))
    return ImageSet(data.images[:6], data.names[:6], data.source, brain=data.brain[:6], volumes=["a", "a", "b", "b", "c", "c"],
                    scale=data.scale)


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


def test_disk_anomaly_matches_protocol_statement(template):
    images = template[:3]
    result = disk_anomaly(images, 0.37, radius=20, rng=4)
    for image, out, label, center in zip(images, result.images, result.labels, result.centers):
        disk = literal_disk(image.shape, center, 20)
        expected = image.copy()
        expected[disk] = np.float32(0.37)
        expected *= image > 0
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(label, disk & (image > 0))
        assert image[tuple(center)] > 0  # the centre lies in the foreground


def test_inputs_are_not_modified(template):
    images = template[:2].copy()
    for kind in TEXTURES:
        texture_anomaly(images, kind, rng=0)
    disk_anomaly(images, 1.0, rng=0)
    np.testing.assert_array_equal(images, template[:2])


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
def test_deformations_equal_per_pixel_statement(template, kind):
    images = template[[0, 5]]
    centers = np.array([[128, 100], [10, 200]])  # the second crosses the brain border
    result = texture_anomaly(images, kind, radius=20, centers=centers)
    for image, out, center in zip(images, result.images, centers):
        np.testing.assert_array_equal(out, per_pixel_deformation(image, center, 20, kind))
    assert not np.array_equal(result.images[0], images[0])


def test_shuffle_permutes_values_inside_label_only(template):
    result = texture_anomaly(template[:4], "shuffle", rng=3)
    for image, out, label in zip(template[:4], result.images, result.labels):
        np.testing.assert_array_equal(out[~label], image[~label])
        np.testing.assert_array_equal(np.sort(out[label]), np.sort(image[label]))
        assert not np.array_equal(out[label], image[label])


def test_labels_restricted_to_brain(template):
    centers = np.array([[45, 128]])  # near the edge of the brain: part of the disk is background
    label = anomaly_labels(template[:1], centers, 20)[0]
    assert label.sum() < disk_masks(label.shape, centers, 20)[0].sum()
    assert (template[0][label] > 0).all()


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
    with pytest.raises(BlindspotError, match="`radius` must be positive; got 0"):
        disk_anomaly(images, 1.0, radius=0, rng=0)


# --- synthetic anomalies and the synthetic test set -----------------------------------------------


def test_synthetic_anomalies_draw_in_the_documented_order(small_set):
    images = small_set.images
    made, record = synthetic_anomalies(images, seed=7, radius=(2.0, 6.0))
    rng = np.random.default_rng(7)
    kinds = [KINDS[k] for k in rng.integers(0, len(KINDS), len(images))]
    intensity, radius = rng.uniform(0.0, 1.0, len(images)), rng.uniform(2.0, 6.0, len(images))
    assert record["kind"] == kinds
    np.testing.assert_array_equal(record["intensity"], intensity)
    np.testing.assert_array_equal(record["radius"], radius)
    np.testing.assert_array_equal(record["center"], sample_centers(images, rng))
    np.testing.assert_array_equal(made.centers, record["center"])
    assert set(record) == {"kind", "intensity", "radius", "center"} and ((radius >= 2) & (radius < 6)).all()


def test_synthetic_anomalies_are_deterministic_per_seed(small_set):
    images = small_set.images.copy()
    first, record = synthetic_anomalies(images, seed=3)
    again, same = synthetic_anomalies(images, seed=3)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert record["kind"] == same["kind"] and np.array_equal(record["radius"], same["radius"])
    other, _ = synthetic_anomalies(images, seed=4)
    assert not np.array_equal(first.images, other.images)
    np.testing.assert_array_equal(images, small_set.images)  # input untouched


def test_synthetic_labels_are_disk_and_brain_and_only_they_change(small_set):
    images = small_set.images
    made, record = synthetic_anomalies(images, seed=11, radius=(3.0, 8.0))
    assert made.labels.dtype == bool and made.images.dtype == images.dtype
    for k, image in enumerate(images):
        label = anomaly_labels(image[None], record["center"][k : k + 1], record["radius"][k])[0]
        np.testing.assert_array_equal(made.labels[k], label)
        assert label.any() and (image[label] > 0).all()
        np.testing.assert_array_equal(made.images[k][~label], image[~label])
        if record["kind"][k] == "disk":
            assert (made.images[k][label] == np.float32(record["intensity"][k])).all()
        else:
            assert np.isin(made.images[k][label], image).all()  # textures move the image's own values
    disks, record = synthetic_anomalies(images, seed=0, kinds=("disk",), radius=(5.0, 5.0))
    assert record["kind"] == ["disk"] * len(images) and (record["radius"] == 5).all()
    np.testing.assert_array_equal(disks.labels, anomaly_labels(images, record["center"], 5.0))
    shuffled, record = synthetic_anomalies(images, seed=0, kinds=("shuffle",))
    for image, out, label in zip(images, shuffled.images, shuffled.labels):
        np.testing.assert_array_equal(np.sort(out[label]), np.sort(image[label]))  # a permutation of the disk's values


def test_synthetic_anomalies_refuse_unknown_kinds(small_set):
    with pytest.raises(BlindspotError, match=r"`kinds` must be a non-empty subset of disk, shuffle, sink, source; got \['blur'\]"):
        synthetic_anomalies(small_set.images, kinds=("blur",))
    with pytest.raises(BlindspotError, match="`kinds` must be a non-empty subset"):
        synthetic_anomalies(small_set.images, kinds=())


def test_synthetic_test_set_is_the_normal_images_then_one_anomalous_copy_each(small_set):
    n = len(small_set)
    test = synthetic_test_set(small_set, seed=5)
    assert len(test) == 2 * n and SYNTHETIC_SEED == 0 and KINDS == ("disk", "shuffle", "sink", "source")
    np.testing.assert_array_equal(test.images[:n], small_set.images)  # the normal half equals the input
    assert not test.labels[:n].any() and test.labels.dtype == bool
    assert test.anomalous.tolist() == [False] * n + [True] * n
    assert test.volumes == small_set.volumes * 2 and test.scale == small_set.scale
    record = test.source["test_set"]
    assert test.names[:n] == small_set.names
    assert test.names[n:] == [f"{name}+{kind}" for name, kind in zip(small_set.names, record["anomalies"]["kind"])]
    np.testing.assert_array_equal(test.brain, np.concatenate([small_set.brain, small_set.brain]))
    radius = (RADIUS_RANGE[0] * 64 / 256, RADIUS_RANGE[1] * 64 / 256)
    made, drawn = synthetic_anomalies(small_set.images, seed=5, radius=radius)
    np.testing.assert_array_equal(test.images[n:], made.images)
    np.testing.assert_array_equal(test.labels[n:], made.labels)
    assert test.labels[n:].any(axis=(1, 2)).all()
    assert (record["kind"], record["seed"], record["radius_at_256"]) == ("synthetic", 5, [10.0, 30.0])
    assert record["radius_range"] == [2.5, 7.5] and record["kinds"] == list(KINDS)
    np.testing.assert_array_equal(record["anomalies"]["radius"], drawn["radius"])
    assert test.source["data"] == "mni152"  # the normal set's source is kept


def test_synthetic_test_set_is_deterministic_per_seed(small_set):
    a, b, c = (synthetic_test_set(small_set, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    default = synthetic_test_set(small_set)
    assert default.source["test_set"]["seed"] == SYNTHETIC_SEED


def test_synthetic_radii_scale_with_the_image_size(small_set):
    double = load(DataConfig(preparation=Preparation(size=128)))
    large = ImageSet(double.images[:6], double.names[:6], double.source)
    radii = {size: np.asarray(s.source["test_set"]["anomalies"]["radius"])
             for size, s in ((64, synthetic_test_set(small_set, seed=2)), (128, synthetic_test_set(large, seed=2)))}
    np.testing.assert_allclose(radii[128], 2 * radii[64])
    assert ((radii[64] >= 2.5) & (radii[64] < 7.5)).all() and ((radii[128] >= 5) & (radii[128] < 15)).all()
    full = ImageSet(np.zeros((1, 256, 256), np.float32) + np.pad(np.full((200, 200), 0.5, np.float32), 28)[None], ["x"])
    at_256 = synthetic_test_set(full, seed=2).source["test_set"]
    assert at_256["radius_range"] == [10.0, 30.0] and 10 <= at_256["anomalies"]["radius"][0] < 30
    assert synthetic_test_set(full).brain is None


def test_synthetic_test_set_needs_a_foreground_in_every_image(small_set):
    images = small_set.images.copy()
    images[2] = 0
    with pytest.raises(BlindspotError, match=r"mni152\[axis=2, slice=68\] has an empty foreground"):
        synthetic_test_set(ImageSet(images, small_set.names, small_set.source))
