"""Whole volumes in closest-canonical RAS order (identity-affine files: as stored) (blindspot.data.volumes, and blindspot.data.iter_volumes with labelled=False)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from eval_fixtures import make_brats_nifti, make_folder, make_mood
from skimage.exposure import equalize_hist

from blindspot.data import DataConfig, Preparation, iter_volumes, whole_volumes
from blindspot.data.io import nifti_spacing, read_centers
from blindspot.data.mni152 import load_mni152_volume
from blindspot.data.preprocess import normalize_percentile
from blindspot.data.volumes import equalize_volume
from blindspot.errors import BlindspotError


def test_a_nifti_folder_gives_its_volumes_as_stored_one_at_a_time(tmp_path):
    root = make_mood(tmp_path / "mood", n=5)
    volumes = whole_volumes(DataConfig(data=str(root)))
    assert len(volumes) == 5 and volumes.names == [f"case_{k}.nii.gz" for k in range(5)]
    assert volumes.source["split"] == "all" and volumes.source["layout"] == "nifti" and len(volumes.source["files"]) == 5
    first = next(iter(volumes))
    stored = nib.load(str(root / "case_0.nii.gz")).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(first.image, stored)  # array index order, no reorientation
    np.testing.assert_array_equal(first.brain, stored > 0)
    assert first.labels is None and first.spacing == (1.0, 1.0, 1.0) and first.files == (str(root / "case_0.nii.gz"),)
    test = whole_volumes(DataConfig(data=str(root), split="test"))
    assert test.names == ["case_3.nii.gz", "case_4.nii.gz"]  # the protocol's last 40 %
    assert [v.name for v in iter_volumes(DataConfig(data=str(root)), default_split="all", labelled=False)] == volumes.names


def test_one_file_spacing_and_preparation(tmp_path):
    rng = np.random.default_rng(0)
    volume = np.where(rng.random((10, 12, 8)) > 0.3, rng.random((10, 12, 8)) * 500, 0).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    affine = np.diag([0.8, 1.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    assert nifti_spacing(path) == pytest.approx((0.8, 1.0, 3.0))
    read = whole_volumes(DataConfig(data=str(path), preparation=Preparation(normalize=99))).read(0)
    assert read.spacing == pytest.approx((0.8, 1.0, 3.0))
    expected = normalize_percentile(volume, 99)
    np.testing.assert_array_equal(read.image, expected)
    equalized = whole_volumes(DataConfig(data=str(path), preparation=Preparation(normalize=99, equalize=True))).read(0).image
    mask = expected > 0
    np.testing.assert_allclose(equalized, np.where(mask, equalize_hist(expected, nbins=256, mask=mask), 0), atol=1e-7)
    assert (equalized[~mask] == 0).all() and (equalized[mask] > 0).all()
    assert (equalize_volume(np.zeros((2, 2, 2), np.float32)) == 0).all()


def test_the_template_and_brats_subjects(tmp_path):
    template = whole_volumes(DataConfig()).read(0)
    assert template.name == "mni152" and template.spacing == (1.0, 1.0, 1.0) and template.files == ()
    np.testing.assert_array_equal(template.image, load_mni152_volume())
    root = make_brats_nifti(tmp_path / "brats")
    with pytest.raises(BlindspotError, match="has intensities in .* expected \\[0, 1\\]"):
        whole_volumes(DataConfig(data=str(root))).read(0)  # raw BraTS intensities need normalize
    subjects = whole_volumes(DataConfig(data=str(root), preparation=Preparation(normalize=99)))
    first = subjects.read(0)
    assert subjects.names == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    assert first.image.shape == (24, 24, 6) and first.files[0].endswith("BraTS2021_00000_flair.nii.gz")  # as stored


def test_sources_without_volumes_and_resizing_are_refused(tmp_path):
    with pytest.raises(BlindspotError, match="has the folder layout \\(2-D images\\)"):
        whole_volumes(DataConfig(data=str(make_folder(tmp_path / "folder"))))
    with pytest.raises(BlindspotError, match="`size` resizes 2-D images; whole volumes are scored at their native size"):
        whole_volumes(DataConfig(preparation=Preparation(size=64)))
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16), np.float32), np.eye(4)), str(flat))
    volumes = whole_volumes(DataConfig(data=str(flat)))  # listed; the shape is known when it is read
    with pytest.raises(BlindspotError, match="flat.nii.gz' has shape \\(16, 16\\); expected a 3-D volume"):
        volumes.read(0)


def test_three_column_centres(tmp_path):
    path = tmp_path / "centres.txt"
    path.write_text("# x y z\n1, 2, 3\n4 5 6\n")
    np.testing.assert_array_equal(read_centers(path, dims=3), [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(BlindspotError, match=r"must hold integer \(row, column\) pairs, one row per image"):
        read_centers(path)  # the 2-D experiments take two columns
    np.save(tmp_path / "c.npy", np.array([[1, 2]]))
    with pytest.raises(BlindspotError, match="voxel index triples"):
        read_centers(tmp_path / "c.npy", dims=3)
