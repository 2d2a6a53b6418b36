"""Hostile inputs: each gives a clear message naming the file and the problem; a bad file is skipped and
counted unless ``strict=true``.

Cases tested elsewhere, not repeated here:

- zero-byte and truncated ``.jpeg`` (skipped, counted; strict raises): tests/data/test_ped_cxr.py
  ``test_unreadable_images_are_skipped_with_a_warning_or_raise_when_strict``;
- empty class folder (train/test: an error naming it; val: allowed): ``test_empty_class_folder_is_an_error_except_in_val``;
- DICOM without pixel data, transfer syntax that lies or has no decoder, 12-of-16 bits stored,
  MONOCHROME1, not a DICOM: tests/data/test_dicom.py;
- CSV with missing or extra columns, NaN boxes, sizes <= 0, duplicate rows, unknown patient ids,
  boxes outside the image: tests/data/test_rsna.py.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cxr.cli.train import run
from cxr.config.compose import compose
from cxr.data.dicom import DicomReadError, read_dicom
from cxr.data.image_io import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from cxr.data.ped_cxr import PedChestXrayDataModule
from cxr.data.rsna import RSNADataModule
from cxr.data.rsna_labels import read_annotations

UNUSUAL = "dätä sets/chest x-ray ü 肺"  # spaces and non-ASCII in every folder name


def _dicom(
    path: Path,
    pixels: np.ndarray | None,
    rows: int | None = None,
    columns: int | None = None,
    bits_stored: int | None = None,
    **tags,
) -> Path:
    """A minimal secondary-capture file; ``rows``/``columns`` may disagree with ``pixels`` (a lying header)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        SecondaryCaptureImageStorage,
        generate_uid(),
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", "MONOCHROME2", 1
    bits = 16 if pixels is not None and pixels.dtype == np.uint16 else 8
    shape = pixels.shape if pixels is not None else (8, 8)
    ds.Rows, ds.Columns = rows if rows is not None else shape[0], columns if columns is not None else shape[1]
    ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` but holds almost no data (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


# --- image files --------------------------------------------------------------------------------


def test_a_text_file_named_jpeg_is_skipped_and_counted(ped_cxr_dir: Path, tmp_path: Path, caplog) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))
    fake = root / "train" / "PNEUMONIA" / "person998_virus_1.jpeg"
    fake.write_text("<html>403 Forbidden</html>")  # what a failed download often leaves behind
    with caplog.at_level(logging.WARNING, logger="cxr.data.ped_cxr"):
        dm = PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache")
        dm.setup()
    assert fake not in dm.splits["train"] + dm.splits["val"]
    assert any(str(fake) in m and "not a readable image" in m for m in caplog.messages)
    assert any("skipped 1 unreadable image(s)" in m for m in caplog.messages)
    with pytest.raises(
        ImageReadError, match=r"1 unreadable image\(s\) \(strict=True\).*person998_virus_1\.jpeg"
    ):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache", strict=True).setup()


def test_files_without_an_image_suffix_and_sub_folders_are_counted(
    ped_cxr_dir: Path, tmp_path: Path, caplog
) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))
    (root / "train" / "NORMAL" / "IM-0001-0001.dcm").write_bytes(b"DICM")
    (root / "test" / "NORMAL" / "IM-0002-0001.webp").write_bytes(b"RIFF")
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "NORMAL" / "batch2").mkdir()  # images one level too deep are not read
    with caplog.at_level(logging.WARNING, logger="cxr.data.ped_cxr_files"):
        PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache").setup()
    assert any(
        "ignored 3 sub-folder(s) or file(s) without an image suffix" in m and "IM-0001-0001.dcm" in m
        for m in caplog.messages
    )


def test_huge_images_are_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    side = int(DEFAULT_MAX_PIXELS**0.5) + 1  # just over the limit, under Pillow's own bomb check
    with pytest.raises(
        ImageReadError,
        match=rf"bomb\.png: image of {side} x {side} = [\d,]+ pixels refused, over "
        rf"the limit of {DEFAULT_MAX_PIXELS:,} \(set CXR_MAX_PIXELS",
    ):
        read_image(_png_header(tmp_path / "bomb.png", side, side))
    with pytest.raises(
        ImageReadError, match=r"giant\.png: image of 60000 x 60000 = 3,600,000,000 pixels refused"
    ):
        read_image(
            _png_header(tmp_path / "giant.png", 60000, 60000)
        )  # past Pillow's own limit: ours still speaks
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setenv("CXR_MAX_PIXELS", "1000")
    with pytest.raises(ImageReadError, match=r"small\.png: image of 50 x 40 = 2,000 pixels refused"):
        read_image(tmp_path / "small.png")
    monkeypatch.setenv("CXR_MAX_PIXELS", "2000")
    assert read_image(tmp_path / "small.png").shape == (40, 50)


def test_huge_dicom_is_refused_from_its_header(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "huge.dcm", np.zeros((8, 8), np.uint8), rows=60000, columns=60000)
    with pytest.raises(
        DicomReadError, match=r"huge\.dcm: image of 60000 x 60000 = 3,600,000,000 pixels refused"
    ):
        read_dicom(path)
    with pytest.raises(DicomReadError, match=r"empty\.dcm: the header gives an empty image \(0 x 8 pixels\)"):
        read_dicom(_dicom(tmp_path / "empty.dcm", np.zeros((8, 8), np.uint8), rows=8, columns=0))


@pytest.mark.parametrize("bits_stored", [11, 15])
def test_16_bit_with_odd_bits_stored(tmp_path: Path, bits_stored: int) -> None:
    stored = np.array([[0, 7], [2**bits_stored - 1, 100]], np.uint16)
    garbage = stored | np.uint16(
        1 << bits_stored
    )  # a set bit above Bits Stored (overlay data) must not count
    img = read_dicom(_dicom(tmp_path / "odd.dcm", garbage, bits_stored=bits_stored))
    np.testing.assert_allclose(img, stored / (2**bits_stored - 1), atol=1e-6)


def test_paths_with_spaces_and_non_ascii_train_end_to_end(ped_cxr_dir: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(ped_cxr_dir, tmp_path / UNUSUAL / "chest_xray"))
    for i, image in enumerate(sorted((root / "train" / "NORMAL").glob("*.jpeg"))[:2]):
        image.rename(image.with_name(f"IM-900{i}-0001 ü é.jpeg"))
    cfg = compose(
        [
            f"datamodule.data_dir='{root}'",
            "datamodule.image_size=32",
            "datamodule.batch_size=8",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir='{tmp_path / UNUSUAL / 'cache'}'",
            "trainer=debug",
            "trainer.enable_progress_bar=false",
            "model.widths=[8,8,8,8,8]",
            "model.hidden=8",
        ],
        output_dir=tmp_path / UNUSUAL / "run",
    )
    metrics = run(cfg)
    assert "test/auroc" in metrics and json.loads((tmp_path / UNUSUAL / "run" / "metrics.json").read_text())
    dm = PedChestXrayDataModule(root, image_size=32, cache_dir=tmp_path / "cache")
    dm.setup()
    assert sum("ü é" in p.name for s in dm.splits.values() for p in s) == 2


# --- RSNA ---------------------------------------------------------------------------------------


def _rsna_copy(rsna_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(rsna_dir, tmp_path / UNUSUAL / "rsna"))


def test_rsna_skips_and_counts_unreadable_or_missing_images(rsna_dir: Path, tmp_path: Path, caplog) -> None:
    root = _rsna_copy(rsna_dir, tmp_path)
    images = sorted((root / "stage_2_train_images").glob("*.dcm"))
    images[0].write_bytes(b"not a dicom at all")
    _dicom(images[1], None)  # a header without pixel data
    images[2].unlink()
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna"):
        dm = RSNADataModule(root, image_size=32, batch_size=4, cache_dir=tmp_path / "cache")
        dm.setup("fit")
    kept = {ds[i]["patient_id"] for ds in (dm.train_set, dm.val_set) for i in range(len(ds))}
    assert len(kept) == 21 and not kept & {p.stem for p in images[:3]}
    text = caplog.text
    assert f"{images[0]}: not a DICOM file" in text and f"{images[1]}: no (7FE0,0010) Pixel Data" in text
    assert f"{images[2]}: no such file" in text
    assert "3 of 24 image(s) listed in" in text and "are missing or cannot be decoded; left out" in text
    with pytest.raises(DicomReadError, match=r"3 of 24 image\(s\) .* \(strict=True\): .*not a DICOM file"):
        RSNADataModule(root, image_size=32, cache_dir=tmp_path / "cache", strict=True).setup("fit")


def test_rsna_without_any_listed_image_is_a_layout_error(rsna_dir: Path, tmp_path: Path) -> None:
    root = _rsna_copy(rsna_dir, tmp_path)
    shutil.rmtree(root / "stage_2_train_images")
    (root / "stage_2_train_images").mkdir()
    with pytest.raises(
        FileNotFoundError,
        match=r"none of the 24 image\(s\) listed in .*stage_2_train_labels\.csv "
        r"exist, e\.g\. .*\.dcm; expected layout: ",
    ):
        RSNADataModule(root, image_size=32, cache_dir=tmp_path / "cache").setup("fit")


def test_rsna_csv_with_text_in_numbers_and_empty_ids(rsna_dir: Path, tmp_path: Path, caplog) -> None:
    root = _rsna_copy(rsna_dir, tmp_path)
    labels = pd.read_csv(root / "stage_2_train_labels.csv", dtype=str)
    positive = labels.index[labels["Target"] == "1"]
    labels.loc[positive[0], "width"] = "12px"  # CSV line positive[0] + 2
    labels = pd.concat(
        [
            labels,
            pd.DataFrame([{"patientId": "", "x": "1", "y": "1", "width": "5", "height": "5", "Target": "1"}]),
        ],
        ignore_index=True,
    )
    labels.to_csv(root / "stage_2_train_labels.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna_labels"):
        table = read_annotations(root)
    text = caplog.text
    assert f"1 non-numeric value(s) in column 'width', e.g. ['12px'] (CSV line(s) {positive[0] + 2})" in text
    assert f"dropped 1 row(s) without a patientId (CSV line(s) {len(labels) + 1})" in text
    assert "dropped 1 Target=1 row(s) with a missing (NaN) box" in text
    pid = labels.loc[positive[0], "patientId"]
    only_box = int(((labels["patientId"] == pid) & (labels["Target"] == "1")).sum()) == 1
    assert len(table) == (23 if only_box else 24) and "" not in set(table["patientId"])  # 24 images listed
    with pytest.raises(ValueError, match=r"without a patientId.*\(strict=True\)"):
        read_annotations(root, strict=True)
    labels.iloc[:0].to_csv(root / "stage_2_train_labels.csv", index=False)  # the header alone
    with pytest.raises(ValueError, match=r"stage_2_train_labels\.csv: no labelled rows; expected layout"):
        read_annotations(root)


# --- the decode cache ---------------------------------------------------------------------------


def test_a_damaged_cache_is_rebuilt(ped_cxr_dir: Path, tmp_path: Path, caplog) -> None:
    first = PedChestXrayDataModule(ped_cxr_dir, image_size=32, cache_dir=tmp_path / "cache")
    first.setup()
    (meta,) = (tmp_path / "cache").glob("*/meta.json")
    meta.write_text('{"orig_sizes": [[1, 2')  # as a full disk or a kill mid-write would leave it
    with caplog.at_level(logging.WARNING, logger="cxr.data.cache"):
        again = PedChestXrayDataModule(ped_cxr_dir, image_size=32, cache_dir=tmp_path / "cache")
        again.setup()
    assert "is unreadable (JSONDecodeError" in caplog.text and "rebuilding it" in caplog.text
    assert again.splits == first.splits and json.loads(meta.read_text())["size"] == 32
    assert not list((tmp_path / "cache").glob("*/*.tmp*"))
