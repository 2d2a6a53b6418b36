"""Reading DICOM radiographs as display-ready float images (air dark), with errors that name the file.

The RSNA Pneumonia Detection Challenge files are JPEG Baseline (1.2.840.10008.1.2.4.50), 8-bit
MONOCHROME2, 1024×1024, CR. Other archives bring JPEG Lossless or JPEG 2000 data, MONOCHROME1,
10–16 bit values with rescale and window tags; :func:`read_dicom` turns all of them into the same
float image in [0, 1] so the rest of the pipeline never sees DICOM specifics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import UID

from cxr.data.image_io import ImageReadError, check_pixel_count, file_problem, pillow_pixel_limit

# Which pip packages provide a decoder, by transfer syntax family; pydicom's own message lists
# plugin names, not what to install.
_INSTALL_HINTS = {
    "1.2.840.10008.1.2.4.50": "pillow or pylibjpeg + pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pillow or pylibjpeg + pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg + pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg + pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg + pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg + pylibjpeg-libjpeg",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pillow or pylibjpeg + pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pillow or pylibjpeg + pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg + pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg + pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg + pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg + pylibjpeg-rle (or nothing: pydicom has a slow RLE decoder)",
}
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights


class DicomReadError(ValueError):
    """A DICOM file exists but its pixels cannot be read; the message names the file and the problem."""


def _open(path: Path, stop_before_pixels: bool) -> pydicom.Dataset:
    if (problem := file_problem(path)) is not None:
        error = FileNotFoundError if problem == "no such file" or "dangling" in problem else DicomReadError
        raise error(f"{path}: {problem}")
    try:
        # large elements (the pixel data) are read only when used: a size check can refuse them first
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size="1 MB")
    except PermissionError as err:
        raise DicomReadError(f"{path}: cannot be read, permission denied ({err.strerror})") from err
    except InvalidDicomError as err:
        raise DicomReadError(f"{path}: not a DICOM file (no 'DICM' preamble): {err}") from err
    except Exception as err:  # pydicom raises many types for truncated or corrupt headers
        raise DicomReadError(f"{path}: cannot parse the DICOM header ({type(err).__name__}: {err})") from err


def _transfer_syntax(ds: pydicom.Dataset, path: Path) -> UID:
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        raise DicomReadError(f"{path}: the file meta information has no (0002,0010) Transfer Syntax UID")
    return UID(tsyntax)


def _check_decoder(tsyntax: UID, path: Path) -> None:
    """Fail early, naming the package to install, when no plugin can decode ``tsyntax``."""
    name = str(tsyntax) if tsyntax.name == str(tsyntax) else f"{tsyntax.name} ({tsyntax})"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as err:
        raise DicomReadError(
            f"{path}: transfer syntax {name} is not supported by pydicom; no decoder exists for it"
        ) from err
    if not decoder.is_available:
        hint = _INSTALL_HINTS.get(str(tsyntax), "a pydicom pixel data plugin")
        missing = "; ".join(decoder.missing_dependencies) or "none listed"
        raise DicomReadError(
            f"{path}: no decoder available for transfer syntax {name}; install {hint} "
            f"(pydicom plugins: {missing})"
        )


def read_dicom(path: str | Path) -> np.ndarray:
    """Decode a DICOM radiograph to float32 (H, W) in [0, 1] with air dark and bone bright.

    Steps: first frame only for multi-frame files; palette colour expanded and RGB/YBR reduced to
    luminance (BT.601) then min–max scaled; for grayscale, the modality LUT (Rescale Slope/Intercept)
    is applied, then the VOI LUT or Window Center/Width if present, scaled by the window's output
    range, otherwise the image's own min–max; MONOCHROME1 (air bright in stored values) is inverted.
    High bits beyond Bits Stored are ignored by pydicom's decoders.

    Raises:
        FileNotFoundError: the file does not exist, or is a dangling symbolic link.
        DicomReadError: not a regular file (FIFO, device), no read permission, not DICOM, no Pixel Data, Rows x Columns over
            :func:`~cxr.data.image_io.max_pixels` (checked before decoding), no decoder for the transfer
            syntax (with the package to install) or a decoding failure; the message starts with the file path.
    """
    path = Path(path)
    ds = _open(path, stop_before_pixels=False)
    if "PixelData" not in ds:
        raise DicomReadError(
            f"{path}: no (7FE0,0010) Pixel Data element (not an image, or the file is truncated)"
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomReadError(f"{path}: header has no (0028,0010) Rows / (0028,0011) Columns")
    try:
        check_pixel_count(path, int(ds.Rows), int(ds.Columns))
    except ImageReadError as err:
        raise DicomReadError(str(err)) from err
    tsyntax = _transfer_syntax(ds, path)
    if tsyntax.is_compressed:
        _check_decoder(tsyntax, path)
    try:
        with pillow_pixel_limit():  # the size passed check_pixel_count; Pillow's own limit must not refuse it
            arr = pixel_array(ds, index=0) if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
    except PermissionError as err:  # the deferred pixel data is read from the file only now
        raise DicomReadError(f"{path}: cannot be read, permission denied ({err.strerror})") from err
    except Exception as err:  # decoders raise many types; all mean "cannot decode"
        raise DicomReadError(
            f"{path}: cannot decode pixel data with transfer syntax {tsyntax.name} "
            f"({type(err).__name__}: {err})"
        ) from err

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:  # colour: no modality or VOI transforms are defined for it
        return _minmax(arr[..., :3].astype(np.float64) @ _LUMA)
    if arr.ndim != 2:
        raise DicomReadError(f"{path}: expected a 2-D image, got pixel array of shape {arr.shape}")

    arr = apply_modality_lut(arr, ds)
    out_range = _voi_output_range(ds)
    if out_range is not None:
        try:
            arr = apply_voi_lut(arr, ds, index=0)
        except (ValueError, NotImplementedError) as err:
            raise DicomReadError(f"{path}: invalid VOI LUT or window tags ({err})") from err
        lo, hi = out_range
        img = np.clip((arr.astype(np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    else:
        img = _minmax(arr)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img.astype(np.float32)


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _voi_output_range(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """Value range :func:`apply_voi_lut` maps into for ``ds``, or None when it would do nothing.

    Mirrors pydicom's choice: a VOI LUT Sequence wins over Window Center/Width and outputs
    0 .. 2**bits - 1; windowing outputs the (rescaled) range of the stored bit depth.
    """
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return 0.0, float(2 ** int(seq[0].LUTDescriptor[2]) - 1)
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return None
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def dicom_size(path: str | Path) -> tuple[int, int]:
    """(rows, columns) of a DICOM image from its header alone (pixel data is not read).

    Raises:
        FileNotFoundError: the file does not exist.
        DicomReadError: not DICOM, or Rows/Columns missing.
    """
    path = Path(path)
    ds = _open(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomReadError(f"{path}: header has no (0028,0010) Rows / (0028,0011) Columns")
    return int(ds.Rows), int(ds.Columns)
