"""Image input and output: NIfTI, NRRD, MetaImage and DICOM series, validated on read and atomic on write."""

from .dicom import generate_uid, write_dicom_series
from .reading import SUPPORTED_EXTENSIONS, ImageHeader, ImageInfo, format_of, read_header, read_image, read_mask
from .writing import SYNTHETIC_METADATA, write_image

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "SYNTHETIC_METADATA",
    "ImageHeader",
    "ImageInfo",
    "format_of",
    "generate_uid",
    "read_header",
    "read_image",
    "read_mask",
    "write_dicom_series",
    "write_image",
]
