"""Data that must never be silently wrong (issue 14): reads outside the data folder, stale or garbage
cache pixels, decode failures kept for good, train/test leakage, a full disk, one-line layout errors,
undefined metrics reported as numbers. One test per failure mode; each fails on the code before the fix.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import cxr.data.cache as cache_module
import cxr.data.image_io as image_io
import cxr.data.rsna as rsna_module
from cxr.data.cache import CacheSpaceError, build_cache, resize_square
from cxr.data.dicom import read_dicom
from cxr.data.image_io import ImageReadError, read_image
from cxr.data.leakage import DataLeakError
from cxr.data.ped_cxr import PedChestXrayDataModule
from cxr.data.rsna import RSNADataModule
from cxr.data.safe_paths import is_plain_name


def _jpeg(path: Path, seed: int, side: int = 40, quality: int = 90) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(path, quality=quality)
    return path


def _cache_folder(cache_dir: Path) -> Path:
    (meta,) = cache_dir.glob("*/meta.json")
    return meta.parent


# --- 1. reads outside the data folder ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "plain"),
    [("0004cfab-14fd", True), ("a b ü", True), ("../x/evil", False), ("/abs/evil", False), ("a/b", False),
     ("a\\b", False), ("..", False), (".", False), ("", False), ("C:evil", False), ("x\0y", False)],
)  # fmt: skip
def test_only_plain_file_names_count_as_ids(name: str, plain: bool) -> None:
    assert is_plain_name(name) is plain


def test_rsna_ids_that_are_paths_are_refused_and_never_read(
    rsna_dir: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    root = Path(shutil.copytree(rsna_dir, tmp_path / "rsna"))
    outside = tmp_path / "outside"
    outside.mkdir()
    donor = sorted((root / "stage_2_train_images").glob("*.dcm"))[0]
    shutil.copy(donor, outside / "evil.dcm")
    shutil.copy(donor, outside / "evil2.dcm")
    bad_ids = ["../../outside/evil", str(outside / "evil2")]  # relative to the image folder, and absolute
    assert (root / "stage_2_train_images" / f"{bad_ids[0]}.dcm").resolve().samefile(outside / "evil.dcm")
    row = {"x": np.nan, "y": np.nan, "width": np.nan, "height": np.nan, "Target": 0}
    for name, extra in (
        ("stage_2_train_labels.csv", [{"patientId": i, **row} for i in bad_ids]),
        ("stage_2_detailed_class_info.csv", [{"patientId": i, "class": "Normal"} for i in bad_ids]),
    ):
        pd.concat([pd.read_csv(root / name), pd.DataFrame(extra)]).to_csv(root / name, index=False)
    read: list[Path] = []

    def recording_read_dicom(path):
        read.append(Path(path))
        return read_dicom(path)

    monkeypatch.setattr(rsna_module, "read_dicom", recording_read_dicom)
    with caplog.at_level(logging.WARNING):
        dm = RSNADataModule(root, image_size=32, batch_size=4, cache_dir=tmp_path / "cache")
        dm.setup("fit")
    assert len(read) == 24 and not any("evil" in str(p) for p in read)
    assert not set(bad_ids) & set(dm.folds["patientId"])
    assert "refused 2 row(s) whose patientId is not a plain file name" in caplog.text
    with pytest.raises(ValueError, match=r"refused 2 row\(s\) whose patientId .*\(strict=True\)"):
        RSNADataModule(root, image_size=32, cache_dir=tmp_path / "cache", strict=True).setup("fit")


def test_images_reached_through_symlinks_out_of_the_data_folder_are_named(
    ped_cxr_dir: Path, rsna_dir: Path, tmp_path: Path, caplog
) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))
    elsewhere = _jpeg(tmp_path / "elsewhere.jpeg", seed=1)
    link = root / "train" / "NORMAL" / "IM-7777-0001.jpeg"
    link.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="cxr.data.ped_cxr_files"):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache").setup()
    assert f"1 image(s) lie outside the data folder through symbolic links, e.g. {link} -> {elsewhere}" in (
        caplog.text
    )
    rsna = tmp_path / "rsna"  # an RSNA folder whose image folder is a link to another disk
    rsna.mkdir()
    for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"):
        shutil.copy(rsna_dir / name, rsna / name)
    (rsna / "stage_2_train_images").symlink_to(rsna_dir / "stage_2_train_images", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna"):
        RSNADataModule(rsna, image_size=32, batch_size=4, cache_dir=tmp_path / "cache").setup("fit")
    assert "24 image(s) lie outside the data folder through symbolic links" in caplog.text


# --- 2. the cache checks its own bytes and its sources' content ---------------------------------------


def test_same_size_garbage_in_the_cache_array_is_detected_and_rebuilt(
    ped_cxr_dir: Path, tmp_path: Path, caplog
) -> None:
    first = PedChestXrayDataModule(ped_cxr_dir, image_size=32, cache_dir=tmp_path / "cache")
    first.setup()
    expected = first.test_dataloader().dataset[0]["image"]
    images_file = _cache_folder(tmp_path / "cache") / "images.npy"
    arr = np.load(images_file, mmap_mode="r+")  # keep the header, so the file still loads with its shape
    arr[:] = np.random.default_rng(0).integers(0, 256, arr.shape, dtype=np.uint8)
    arr.flush()
    del arr
    with caplog.at_level(logging.WARNING, logger="cxr.data.cache"):
        again = PedChestXrayDataModule(ped_cxr_dir, image_size=32, cache_dir=tmp_path / "cache")
        again.setup()
    assert "checksum" in caplog.text and "rebuilding it" in caplog.text
    torch.testing.assert_close(again.test_dataloader().dataset[0]["image"], expected)


def test_a_source_rewritten_with_same_size_and_mtime_gets_new_pixels(tmp_path: Path, caplog) -> None:
    a, b = _jpeg(tmp_path / "a.jpeg", seed=0), _jpeg(tmp_path / "b.jpeg", seed=1)
    old = build_cache([a, b], read_image, 16, tmp_path / "cache")
    before = np.array(old.images[0])
    st = a.stat()
    new = _jpeg(tmp_path / "new.jpeg", seed=2, quality=50)  # smaller than a; padded to a's size
    data = new.read_bytes()
    assert len(data) < st.st_size
    a.write_bytes(data + b"\0" * (st.st_size - len(data)))  # bytes after the JPEG end marker are ignored
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (a.stat().st_size, a.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with caplog.at_level(logging.WARNING, logger="cxr.data.cache"):
        cached = build_cache([a, b], read_image, 16, tmp_path / "cache")
    assert "1 source file(s) changed since it was built" in caplog.text and str(a) in caplog.text
    np.testing.assert_array_equal(cached.images[0], resize_square(read_image(new), 16))
    assert not np.array_equal(cached.images[0], before) and cached.hashes[0] != old.hashes[0]
    np.testing.assert_array_equal(cached.images[1], old.images[1])


def test_a_changed_source_with_a_read_only_cache_is_an_error_not_stale_pixels(
    tmp_path: Path, monkeypatch
) -> None:
    a = _jpeg(tmp_path / "a.jpeg", seed=0)
    build_cache([a], read_image, 16, tmp_path / "cache")
    _jpeg(a, seed=5)

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache_module, "_patch", read_only)
    with pytest.raises(OSError, match=r"1 source file\(s\) changed but the cache cannot be updated"):
        build_cache([a], read_image, 16, tmp_path / "cache")


# --- 3. decode failures are not kept; CXR_MAX_PIXELS alone sets the limit -----------------------------


def test_raising_CXR_MAX_PIXELS_decodes_a_file_refused_before(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "big.png"
    Image.fromarray(np.full((60, 50), 200, np.uint8)).save(big)
    monkeypatch.setenv("CXR_MAX_PIXELS", "1000")
    refused = build_cache([big], read_image, 8, tmp_path / "cache")
    assert (
        "big.png: image of 50 x 60 = 3,000 pixels refused, over the limit of 1,000 (set CXR_MAX_PIXELS"
        in (refused.errors[0])
    )
    # Pillow's own bomb check (an error above 2 x Image.MAX_IMAGE_PIXELS), lowered here so that a small
    # file stands for a 180-megapixel one, must not refuse what CXR_MAX_PIXELS allows
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setenv("CXR_MAX_PIXELS", "5000")
    allowed = build_cache([big], read_image, 8, tmp_path / "cache")
    assert (
        allowed.errors == {}
        and (allowed.images[0] == 200).all()
        and allowed.orig_sizes[0].tolist() == [60, 50]
    )
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored after reading


def test_a_permission_error_is_named_as_such_and_retried_next_time(tmp_path: Path, monkeypatch) -> None:
    path = _jpeg(tmp_path / "locked.jpeg", seed=0)
    real_open = image_io.Image.open

    def denied(fp, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(fp))

    monkeypatch.setattr(image_io.Image, "open", denied)  # root ignores chmod, so deny at open
    with pytest.raises(ImageReadError, match=r"locked\.jpeg: cannot be read, permission denied") as err:
        read_image(path)
    assert "corrupt" not in str(err.value) and "truncated" not in str(err.value)
    assert "permission denied" in build_cache([path], read_image, 8, tmp_path / "cache").errors[0]
    monkeypatch.setattr(image_io.Image, "open", real_open)  # the permission is fixed
    fixed = build_cache([path], read_image, 8, tmp_path / "cache")
    assert fixed.errors == {} and fixed.images[0].any()


# --- 4. leakage -------------------------------------------------------------------------------------


def test_a_byte_identical_train_and_test_file_is_named(ped_cxr_dir: Path, tmp_path: Path, caplog) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))
    test_image = sorted((root / "test" / "NORMAL").glob("*.jpeg"))[0]
    copy = root / "train" / "NORMAL" / "IM-8888-0001.jpeg"
    shutil.copy(test_image, copy)
    link = root / "train" / "NORMAL" / "IM-8889-0001.jpeg"  # a symlink to a test image: the same bytes
    link.symlink_to(sorted((root / "test" / "NORMAL").glob("*.jpeg"))[1])
    with caplog.at_level(logging.WARNING, logger="cxr.data.leakage"):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache").setup()
    assert "4 file(s) in 2 group(s) of byte-identical images span more than one split" in caplog.text
    assert f"{copy} = {test_image}" in caplog.text
    with pytest.raises(DataLeakError, match=r"byte-identical.*\(strict=True\)"):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache", strict=True).setup()


def test_a_patient_in_train_and_test_is_named(ped_cxr_dir: Path, tmp_path: Path, caplog) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))
    test_image = sorted((root / "test" / "PNEUMONIA").glob("person*.jpeg"))[0]
    patient = test_image.name.split("_")[0]
    _jpeg(root / "train" / "PNEUMONIA" / f"{patient}_bacteria_9999.jpeg", seed=3)  # other image, same child
    with caplog.at_level(logging.WARNING, logger="cxr.data.leakage"):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache").setup()
    assert (
        "1 patient(s) appear in more than one split, e.g. " in caplog.text and f"{patient} (" in caplog.text
    )


# --- 7. full disk -----------------------------------------------------------------------------------


def _no_tmp_left(cache_dir: Path) -> bool:
    return not [p for p in cache_dir.rglob("*") if ".tmp" in p.name]


def test_a_full_disk_fails_in_one_line_before_decoding_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch
) -> None:
    paths = [_jpeg(tmp_path / f"{i}.jpeg", seed=i) for i in range(3)]
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 100, 100))
    decoded = []
    decoder = functools.update_wrapper(lambda p: decoded.append(p) or read_image(p), read_image)
    with pytest.raises(CacheSpaceError) as err:
        build_cache(paths, decoder, 64, tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message and "not enough disk space" in message and "100 free" in message
    assert f"{3 * 64 * 64 + 4096 + 512 * 3:,} bytes needed" in message and str(tmp_path / "cache") in message
    assert decoded == [] and _no_tmp_left(tmp_path / "cache")


@pytest.mark.parametrize("where", ["allocating", "decoding"])
def test_every_failure_while_building_removes_the_temporary_files(tmp_path: Path, monkeypatch, where) -> None:
    paths = [_jpeg(tmp_path / f"{i}.jpeg", seed=i) for i in range(3)]
    if where == "allocating":  # the free-space figure was optimistic: the file system runs out for real

        def full(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(cache_module.os, "posix_fallocate", full, raising=False)
        with pytest.raises(CacheSpaceError, match=r"not enough disk space, [\d,]+ bytes needed"):
            build_cache(paths, read_image, 16, tmp_path / "cache")
        monkeypatch.undo()
    else:  # Ctrl-C in the middle

        def interrupted(path):
            raise KeyboardInterrupt

        decoder = functools.update_wrapper(interrupted, read_image)
        with pytest.raises(KeyboardInterrupt):
            build_cache(paths, decoder, 16, tmp_path / "cache")
    assert _no_tmp_left(tmp_path / "cache")
    assert build_cache(paths, read_image, 16, tmp_path / "cache").errors == {}


# --- 10. one-line layout and argument errors before any decoding --------------------------------------


@pytest.fixture
def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("images were decoded before the problem was reported")

    monkeypatch.setattr("cxr.data.ped_cxr.build_cache", refuse)
    monkeypatch.setattr("cxr.data.rsna.build_cache", refuse)


def _break(root: Path, case: str) -> dict:
    """Damage a copy of the Ped-ChestXray tree as ``case`` says; return the datamodule arguments."""
    if case == "class folder is a file":
        shutil.rmtree(root / "train" / "NORMAL")
        (root / "train" / "NORMAL").write_text("")
    elif case == "empty test class folder":
        for p in (root / "test" / "PNEUMONIA").iterdir():
            p.unlink()
    elif case == "official split without val":
        shutil.rmtree(root / "val")
        return {"split": "official"}
    elif case == "batch_size 0":
        return {"batch_size": 0}
    elif case == "image_size 0":
        return {"image_size": 0}
    return {}


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("class folder is a file", FileNotFoundError, r"train/NORMAL must be a folder, not a file; expected layout"),
        ("empty test class folder", FileNotFoundError, r"test/PNEUMONIA: no image files \(suffixes"),
        ("official split without val", FileNotFoundError, r"missing folder\(s\) .*val/NORMAL.*split='official'"),
        ("batch_size 0", ValueError, r"datamodule\.batch_size must be a positive integer, got 0"),
        ("image_size 0", ValueError, r"datamodule\.image_size must be a positive integer, got 0"),
    ],
)  # fmt: skip
def test_ped_layout_and_argument_problems_are_one_line_before_decoding(
    ped_cxr_dir: Path, tmp_path: Path, no_decoding, case: str, error: type, message: str
) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))
    kwargs = _break(root, case)
    with pytest.raises(error, match=message) as err:
        PedChestXrayDataModule(root, cache_dir=tmp_path / "cache", **kwargs).setup()
    assert "\n" not in str(err.value)


def test_rsna_without_the_class_csv_is_one_line_before_decoding(
    rsna_dir: Path, tmp_path: Path, no_decoding
) -> None:
    root = Path(shutil.copytree(rsna_dir, tmp_path / "rsna"))
    (root / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"stage_2_detailed_class_info\.csv: no such file; expected"
    ) as err:
        RSNADataModule(root, image_size=32, cache_dir=tmp_path / "cache").setup("fit")
    assert "\n" not in str(err.value)


def test_fifos_and_dangling_links_are_not_called_files_without_an_image_suffix(
    ped_cxr_dir: Path, tmp_path: Path, caplog
) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))
    fifo = root / "train" / "NORMAL" / "IM-6666-0001.jpeg"
    os.mkfifo(fifo)  # reading it would block forever
    dangling = root / "train" / "PNEUMONIA" / "person666_virus_1.jpeg"
    dangling.symlink_to(tmp_path / "gone.jpeg")
    with caplog.at_level(logging.WARNING, logger="cxr.data.ped_cxr_files"):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache").setup()
    assert f"ignored 1 FIFO(s), socket(s) or device file(s), e.g. {fifo}" in caplog.text
    assert f"ignored 1 dangling symbolic link(s), e.g. {dangling}" in caplog.text
    assert "image suffix" not in caplog.text
    with pytest.raises(ValueError, match=r"FIFO.*\(strict=True\)"):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache", strict=True).setup()


# --- 12. undefined metrics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "undefined"), [([1, 1, 1], {"auroc", "specificity"}), ([0, 0, 0], {"auroc", "recall"})]
)
def test_metrics_a_one_class_split_cannot_define_are_nan_with_a_warning(labels, undefined) -> None:
    from cxr.tasks.classification import ClassificationTask

    class FirstPixel(torch.nn.Module):
        num_classes = 1

        def forward(self, x):
            return x[:, :1, 0, 0]

    task = ClassificationTask(FirstPixel(), optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    logged: dict = {}
    task.log_dict = logged.update
    image = torch.zeros(3, 1, 4, 4)
    image[:, 0, 0, 0] = torch.tensor([2.0, -1.0, 0.5])
    task.test_step({"image": image, "label": torch.tensor(labels), "index": torch.arange(3)}, 0)
    with pytest.warns(
        UserWarning, match=rf"test: only {'pneumonia' if labels[0] else 'normal'} images \(3\)"
    ):
        task.on_test_epoch_end()
    for name in ("auroc", "specificity", "recall", "accuracy"):
        assert torch.isnan(logged[f"test/{name}"]).item() is (name in undefined), name
