"""Alert image stamps decoded from FITS bytes, whatever the survey wraps them in.

ZTF sends each stamp gzipped inside ``{"fileName", "stampData"}``; Rubin/LSST sends the raw
FITS bytes as the field itself. :func:`decode_stamp` reads either (it looks at the bytes,
not at the survey), so every survey profile uses it and only says where the bytes are.
"""

from __future__ import annotations

import gzip
import io

import numpy as np

__all__ = ["GZIP_MAGIC", "decode_stamp"]

#: The first two bytes of a gzip stream.
GZIP_MAGIC = b"\x1f\x8b"


def decode_stamp(data: bytes | None) -> np.ndarray:
    """The 2-D float image of a FITS stamp, gzipped or raw; ``ValueError`` when it is not one.

    Takes the first HDU with a 2-D image: ZTF puts it in the primary HDU, Rubin in an
    extension (with variance and mask planes after it).
    """
    if not data:
        raise ValueError("empty stamp")
    raw = bytes(data)
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"corrupt gzip stream: {error}") from None
    if not raw.startswith(b"SIMPLE"):
        raise ValueError("not a FITS file")
    from astropy.io import fits

    try:
        with fits.open(io.BytesIO(raw), memmap=False) as hdus:
            for hdu in hdus:
                if hdu.data is not None and np.ndim(hdu.data) == 2:
                    return np.asarray(hdu.data, dtype=np.float64)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"unreadable FITS: {error}") from None
    raise ValueError("no 2-D image in the FITS file")
