"""cxr: pneumonia classification and detection on chest radiographs."""

__version__ = "0.1.0"
