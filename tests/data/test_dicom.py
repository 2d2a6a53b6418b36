"""read_dicom / dicom_size: real challenge-style files from ../shared plus hand-made edge cases."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from cxr.data.dicom import DicomReadError, dicom_size, read_dicom

SHARED = Path(__file__).parents[2].parent / "shared" / "data" / "dicom"
CHEST = sorted((SHARED / "siim_acr_sample").glob("*.dcm"))
MONO1 = SHARED / "monochrome1" / "RG3_J2KR.dcm"
ABSENT = pytest.param(None, marks=pytest.mark.skip(reason=f"{SHARED} absent"))


def _write(
    path: Path,
    pixels: np.ndarray | None,
    tsyntax=ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **tags,
) -> Path:
    """A minimal valid secondary-capture file; ``pixels`` (H, W[, 3]) uint8/uint16 stored natively."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = tsyntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    shape = pixels.shape if pixels is not None else (8, 8)
    ds.Rows, ds.Columns = shape[-3:-1] if len(shape) == 3 and shape[-1] == 3 else shape[-2:]
    ds.SamplesPerPixel = 3 if len(shape) == 3 and shape[-1] == 3 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = 8 if pixels is None or pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixel_data is not None:
        ds.PixelData = pixel_data
        ds["PixelData"].VR = "OB"
    elif pixels is not None:
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


# --- real files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CHEST or [ABSENT], ids=lambda p: p.name[-16:] if p else "absent")
def test_real_chest_film_decodes_air_dark(path: Path) -> None:
    img = read_dicom(path)
    raw = pydicom.dcmread(path).pixel_array
    assert img.dtype == np.float32 and img.shape == raw.shape == dicom_size(path) == (1024, 1024)
    assert 0.0 <= img.min() and img.max() <= 1.0
    # 8-bit MONOCHROME2 without window tags: exactly the min-max scaled stored values
    np.testing.assert_allclose(img, _minmax(raw), atol=1e-6)
    h, w = img.shape
    centre = img[int(0.4 * h) : int(0.6 * h), int(0.45 * w) : int(0.55 * w)].mean()  # mediastinum
    corners = (img[: h // 8, : w // 8].mean() + img[: h // 8, -w // 8 :].mean()) / 2
    lungs = (
        img[int(0.3 * h) : int(0.5 * h), int(0.2 * w) : int(0.35 * w)].mean()
        + img[int(0.3 * h) : int(0.5 * h), int(0.65 * w) : int(0.8 * w)].mean()
    ) / 2
    assert corners < centre and lungs < centre


@pytest.mark.parametrize("path", [MONO1] if MONO1.is_file() else [ABSENT], ids=["RG3_J2KR"])
def test_real_monochrome1_jpeg2000_is_windowed_and_inverted(path: Path) -> None:
    ds = pydicom.dcmread(path)
    assert (
        ds.PhotometricInterpretation == "MONOCHROME1"
        and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    )
    img, raw = read_dicom(path), ds.pixel_array.astype(np.float64)
    assert img.dtype == np.float32 and img.shape == raw.shape == dicom_size(path) == (1760, 1760)
    assert np.corrcoef(img.ravel(), raw.ravel())[0, 1] < -0.99
    # WindowCenter 550 / WindowWidth 1024 (LINEAR), then inverted
    expected = 1 - np.clip((raw - 549.5) / 1023 + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-5)
    h, w = img.shape
    air = img[int(0.05 * h) : int(0.3 * h), int(0.28 * w) : int(0.33 * w)].mean()  # beside the leg
    bone = img[int(0.05 * h) : int(0.3 * h), int(0.46 * w) : int(0.52 * w)].mean()  # tibial shaft
    assert air < 0.2 < 0.6 < bone


# --- hand-made files ----------------------------------------------------------------------------


def test_16bit_with_12_bits_stored_ignores_high_bits(tmp_path: Path) -> None:
    stored = np.array([[100, 4000], [2000, 50]], np.uint16)
    garbage = stored.copy()
    garbage[1, 0] |= 0x8000  # an overlay bit above Bits Stored must not count
    img = read_dicom(_write(tmp_path / "a.dcm", garbage, bits_stored=12))
    np.testing.assert_allclose(img, (stored - 50) / 3950, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 64], [128, 255]], np.uint8)
    img = read_dicom(_write(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(img, 1 - stored / 255, atol=1e-6)


def test_rescale_then_window(tmp_path: Path) -> None:
    # stored 0..1000 → HU -1000..1000; window centre 0, width 1000 (LINEAR: c - 0.5, w - 1)
    stored = np.array([[0, 250], [500, 1000]], np.uint16)
    img = read_dicom(
        _write(
            tmp_path / "ct.dcm",
            stored,
            bits_stored=12,
            RescaleSlope=2,
            RescaleIntercept=-1000,
            WindowCenter=0,
            WindowWidth=1000,
        )
    )
    hu = stored * 2.0 - 1000
    np.testing.assert_allclose(img, np.clip((hu + 0.5) / 999 + 0.5, 0, 1), atol=1e-6)
    assert img[0, 0] == 0 and img[1, 1] == 1 and img[1, 0] == pytest.approx(0.5005, abs=1e-4)


def test_voi_lut_sequence(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 8])
    item.add_new("LUTData", "US", [v // 2 for v in range(256)])
    stored = np.array([[0, 100], [200, 255]], np.uint8)
    img = read_dicom(_write(tmp_path / "voi.dcm", stored, VOILUTSequence=[item]))
    np.testing.assert_allclose(img, (stored // 2) / 255, atol=1e-6)


def test_multiframe_takes_first_frame(tmp_path: Path) -> None:
    frames = np.stack([np.array([[0, 10], [20, 30]], np.uint8), np.full((2, 2), 99, np.uint8)])
    img = read_dicom(_write(tmp_path / "mf.dcm", frames, NumberOfFrames=2))
    np.testing.assert_allclose(img, _minmax(frames[0]), atol=1e-6)


def test_rgb_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 0, 0]]], np.uint8)
    img = read_dicom(_write(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    lum = np.array([[0.299, 0.587], [0.114, 0.0]])
    np.testing.assert_allclose(img, lum / 0.587, atol=1e-6)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.dcm"):
        read_dicom(tmp_path / "nope.dcm")
    with pytest.raises(FileNotFoundError, match=r"nope\.dcm"):
        dicom_size(tmp_path / "nope.dcm")


def test_no_pixel_data_header_still_readable(tmp_path: Path) -> None:
    path = _write(tmp_path / "hdr.dcm", None)
    assert dicom_size(path) == (8, 8)
    with pytest.raises(DicomReadError, match=r"hdr\.dcm.*Pixel Data"):
        read_dicom(path)


def test_not_a_dicom(tmp_path: Path) -> None:
    path = tmp_path / "photo.dcm"
    Image.new("L", (4, 4)).save(path, format="PNG")
    with pytest.raises(DicomReadError, match=r"photo\.dcm.*not a DICOM"):
        read_dicom(path)


def test_transfer_syntax_that_lies_about_the_data(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "liar.dcm",
        np.zeros((8, 8), np.uint8),
        tsyntax=JPEGBaseline8Bit,
        pixel_data=encapsulate([b"\x00" * 64]),
    )
    with pytest.raises(DicomReadError, match=r"liar\.dcm.*JPEG Baseline"):
        read_dicom(path)


def test_transfer_syntax_without_any_decoder(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "video.dcm",
        np.zeros((8, 8), np.uint8),
        tsyntax="1.2.840.10008.1.2.4.100",
        pixel_data=encapsulate([b"\x00" * 64]),
    )  # MPEG2 video: pydicom has no decoder at all
    with pytest.raises(
        DicomReadError, match=r"video\.dcm.*MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100.*not supported"
    ):
        read_dicom(path)


def test_missing_decoder_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    path = _write(
        tmp_path / "jpeg.dcm", image, tsyntax=JPEGBaseline8Bit, pixel_data=encapsulate([buf.getvalue()])
    )
    assert np.abs(read_dicom(path) - _minmax(image)).max() < 0.05  # decodes while plugins exist
    monkeypatch.setattr(get_decoder(JPEGBaseline8Bit), "_available", {})  # as if pillow/pylibjpeg were absent
    with pytest.raises(
        DicomReadError,
        match=r"jpeg\.dcm.*JPEG Baseline.*1\.2\.840\.10008\.1\.2\.4\.50.*"
        r"pillow.*pylibjpeg-libjpeg",
    ):
        read_dicom(path)
