"""blindspot.data.io: file formats only (images, arrays, NIfTI, listings, centres), each error one sentence naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import brain_volume, save_nifti
from PIL import Image

from blindspot.data.io import (
    COLOUR_NOTE,
    files_in,
    index_by_stem,
    is_nifti,
    nifti_shape,
    nifti_spacing,
    read_array,
    read_centers,
    read_image,
    read_nifti,
    stem,
)
from blindspot.errors import BlindspotError


def test_stem_and_is_nifti():
    assert stem("case_01.nii.gz") == "case_01" and stem("/x/a.b.png") == "a.b" and stem("m.NPY") == "m"
    assert stem("notes.txt") == "notes"
    assert is_nifti("v.nii") and is_nifti("/a/V.NII.GZ") and not is_nifti("v.nii.zip") and not is_nifti("v.npy")


def test_read_image_scales_8_and_16_bit_and_bool(tmp_path):
    values = np.array([[0, 51], [204, 255]], np.uint8)
    Image.fromarray(values).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), values.astype(np.float32) / 255)
    deep = np.array([[0, 1000], [30000, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, deep / 65535, rtol=1e-6)
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), [[1, 0], [0, 1]])


def test_colour_image_is_read_as_grey_with_a_warning(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.warns(UserWarning, match="colour images were converted to grey"):
        grey = read_image(tmp_path / "colour.png")
    assert COLOUR_NOTE.startswith("colour images were converted to grey")
    expected = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
    assert grey.shape == (4, 5) and grey.dtype == np.float32
    np.testing.assert_array_equal(grey, expected)


def test_grey_image_gives_no_warning(tmp_path, recwarn):
    Image.fromarray(np.full((3, 3), 7, np.uint8)).save(tmp_path / "g.png")
    read_image(tmp_path / "g.png")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_image_errors_name_the_file(tmp_path):
    with pytest.raises(BlindspotError, match=r"'.*gone.png' does not exist"):
        read_image(tmp_path / "gone.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(BlindspotError, match=r"'.*bad.png' is not a readable image file \(UnidentifiedImageError"):
        read_image(tmp_path / "bad.png")


def test_files_in_skips_hidden_files_folders_and_other_types(tmp_path):
    for name in ("b.png", "a.PNG", "._a.png", ".DS_Store", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in files_in(tmp_path, (".png",))] == ["a.PNG", "b.png"]
    with pytest.raises(BlindspotError, match=r"folder '.*missing' does not exist"):
        files_in(tmp_path / "missing", (".png",))
    with pytest.raises(BlindspotError, match=r"'.*b.png' is not a folder"):
        files_in(tmp_path / "b.png", (".png",))


def test_index_by_stem_matches_by_name_without_extension(tmp_path):
    np.save(tmp_path / "case_1.npy", np.zeros((2, 2)))
    save_nifti(tmp_path / "case_2.nii.gz", np.zeros((2, 2, 2), np.float32))
    (tmp_path / "._case_3.png").write_bytes(b"junk")
    (tmp_path / "readme.txt").write_text("x")
    index = index_by_stem(tmp_path, "maps")
    assert sorted(index) == ["case_1", "case_2"] and index["case_2"].name == "case_2.nii.gz"
    np.save(tmp_path / "case_2.npy", np.zeros((2, 2)))
    with pytest.raises(BlindspotError, match=r"maps folder '.*' has two files named 'case_2' \('case_2.nii.gz' and 'case_2.npy'\); keep one"):
        index_by_stem(tmp_path, "maps")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlindspotError, match=r"labels folder '.*empty' holds no file of a supported type \(.nii.gz, "):
        index_by_stem(tmp_path / "empty", "labels")
    with pytest.raises(BlindspotError, match=r"masks folder '.*nope' does not exist"):
        index_by_stem(tmp_path / "nope", "masks")


def test_read_nifti_drops_trailing_singletons_and_reads_blocks(tmp_path):
    volume = brain_volume((12, 10, 8))
    save_nifti(tmp_path / "v.nii.gz", volume[..., None])  # (12, 10, 8, 1)
    assert nifti_shape(tmp_path / "v.nii.gz") == (12, 10, 8)
    full = read_nifti(tmp_path / "v.nii.gz")
    assert full.dtype == np.float32
    np.testing.assert_array_equal(full, volume)
    np.testing.assert_array_equal(read_nifti(tmp_path / "v.nii.gz", index=(slice(None), slice(None), slice(2, 5))), volume[..., 2:5])
    save_nifti(tmp_path / "flat.nii", np.ones((8, 8), np.float32))
    assert read_nifti(tmp_path / "flat.nii", ndim=None).shape == (8, 8)
    with pytest.raises(BlindspotError, match=r"'.*flat.nii' has shape \(8, 8\); expected a 3-D volume"):
        read_nifti(tmp_path / "flat.nii")
    save_nifti(tmp_path / "4d.nii", np.ones((2, 2, 2, 2), np.float32))
    with pytest.raises(BlindspotError, match=r"'.*4d.nii' has shape \(2, 2, 2, 2\); expected a 2-D or 3-D array"):
        read_nifti(tmp_path / "4d.nii", ndim=None)


def test_damaged_nifti_files_are_named(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(BlindspotError, match=r"'.*bad.nii.gz' is not a readable NIfTI file"):
        read_nifti(tmp_path / "bad.nii.gz")
    save_nifti(tmp_path / "v.nii.gz", brain_volume())
    blob = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "v.nii.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BlindspotError, match=r"'.*v.nii.gz' .*") as err:
        read_nifti(tmp_path / "v.nii.gz")
    assert "\n" not in str(err.value)
    with pytest.raises(BlindspotError, match=r"'.*missing.nii' does not exist"):
        read_nifti(tmp_path / "missing.nii")


def test_read_array_types_and_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.int16).reshape(2, 3))
    assert read_array(tmp_path / "a.npy").dtype == np.int16  # .npy as stored
    save_nifti(tmp_path / "v.nii.gz", brain_volume((4, 4, 3)))
    assert read_array(tmp_path / "v.nii.gz").shape == (4, 4, 3)
    Image.fromarray(np.full((3, 2), 255, np.uint8)).save(tmp_path / "i.png")
    np.testing.assert_array_equal(read_array(tmp_path / "i.png"), np.ones((3, 2), np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BlindspotError, match=r"'.*obj.npy' is not a readable .npy array"):
        read_array(tmp_path / "obj.npy")  # never unpickled
    np.save(tmp_path / "line.npy", np.zeros(5))
    with pytest.raises(BlindspotError, match=r"'.*line.npy' holds a float64 array of shape \(5,\); expected a 2-D or 3-D numeric array"):
        read_array(tmp_path / "line.npy")
    (tmp_path / "x.txt").write_text("1 2")
    with pytest.raises(BlindspotError, match=r"'.*x.txt' has an unsupported type; expected one of .nii.gz, .nii, .npy, .png"):
        read_array(tmp_path / "x.txt")
    with pytest.raises(BlindspotError, match=r"'.*none.npy' does not exist or is not a file"):
        read_array(tmp_path / "none.npy")


def test_read_centers_from_text_npy_and_npz(tmp_path):
    (tmp_path / "c.txt").write_text("# row, column\n3, 4\n5 6  # second\n")
    centers = read_centers(tmp_path / "c.txt")
    assert centers.dtype == np.int64
    np.testing.assert_array_equal(centers, [[3, 4], [5, 6]])
    np.save(tmp_path / "c.npy", np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(read_centers(tmp_path / "c.npy"), [[1, 2]])
    np.savez(tmp_path / "results.npz", centers=np.array([[7, 8]]), other=np.zeros(2))
    np.testing.assert_array_equal(read_centers(tmp_path / "results.npz"), [[7, 8]])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("gone.txt", None, r"`centers` file '.*gone.txt' does not exist"),
        ("r.npz", {"maps": np.zeros((1, 2))}, r"'.*r.npz' holds no 'centers' array"),
        ("c.txt", "a b\n", r"`centers` file '.*c.txt' is not readable as two integer columns"),
        ("c.txt", "1.5 2\n", r"`centers` file '.*c.txt' must hold integer \(row, column\) pairs.*shape \(1, 2\)"),
        ("c.npy", np.zeros((2, 3)), r"must hold integer \(row, column\) pairs, one row per image; got a float64 array of shape \(2, 3\)"),
    ],
)
def test_bad_centres_files(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(BlindspotError, match=message):
        read_centers(path)


def test_nifti_spacing_is_read_as_stored(tmp_path):
    import nibabel as nib

    image = nib.Nifti1Image(np.ones((4, 4, 4, 1), np.float32), np.diag([2.0, 3.0, 4.0, 1.0]))
    nib.save(image, str(tmp_path / "a.nii.gz"))
    nib.save(nib.Nifti2Image(image.get_fdata(), image.affine), str(tmp_path / "b.nii"))
    image.header["pixdim"][1] = 0  # nibabel's own reader would repair it to 1 mm
    nib.save(image, str(tmp_path / "zero.nii.gz"))
    assert nifti_spacing(tmp_path / "a.nii.gz") == nifti_spacing(tmp_path / "b.nii") == (2.0, 3.0, 4.0)
    assert nifti_spacing(tmp_path / "zero.nii.gz") == (0.0, 3.0, 4.0)
    (tmp_path / "bad.nii").write_bytes(b"xx")
    with pytest.raises(BlindspotError, match="'.*bad.nii' is not a readable NIfTI file"):
        nifti_spacing(tmp_path / "bad.nii")
