"""Reading prediction inputs: any image file or DICOM the data readers know, resized and normalised like training.

:func:`read_input` decodes one file to uint8 (H, W); :func:`prepare` turns it into the float32
(1, 1, size, size) tensor a member expects (its checkpoint's image size and normalisation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from cxr.data.cache import resize_square, to_uint8
from cxr.data.image_io import IMAGE_SUFFIXES, read_image
from cxr.data.transforms import RadiographTransform

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


INPUT_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES


def read_input(path: str | Path, size_hint: int | None = None) -> np.ndarray:
    """Decode a JPEG/PNG (uint8) or DICOM (float32 in [0, 1]) radiograph to a 2-D array.

    DICOM is recognised by suffix or by its ``DICM`` preamble. ``size_hint`` is passed to
    :func:`~cxr.data.image_io.read_image`, as the Ped-ChestXray datamodule does; leave it None where
    the original size matters (boxes). Raises FileNotFoundError, ImageReadError or DicomReadError
    naming the file.
    """
    path = Path(path)
    is_dicom = path.suffix.lower() in DICOM_SUFFIXES
    if not is_dicom and path.is_file():
        with open(path, "rb") as f:
            is_dicom = f.read(132)[128:132] == b"DICM"
    if is_dicom:
        from cxr.data.dicom import read_dicom

        return read_dicom(path)
    return read_image(path, size_hint=size_hint)


def prepare(image: np.ndarray, size: int, mean: float, std: float) -> Tensor:
    """A decoded radiograph as the network sees it: uint8, S×S (area/bilinear resize), normalised;
    float32 (1, S, S). The same steps as the decode-once cache plus the eval transform."""
    return RadiographTransform((), mean, std)(resize_square(to_uint8(image), size))[0]
