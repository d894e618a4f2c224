"""The audit trail of a published price: its input observation ids and why each was used or excluded.

Stored compactly, one row per series version (never one per input):

- `input_ids`: the ids ascending, delta-encoded (the first delta is the first id), as little-endian unsigned
  integers of the narrowest width that holds the largest delta (1, 2, 4 or 8 bytes), after a one-byte tag
  naming the width. Deltas of interleaved ids do not compress, so they are not compressed;
- `input_reasons`: one code per input, aligned with the sorted ids (0 = used, else `index_math.REASON_CODES`:
  related party, ineligible tier, invalid quantity, lower tier not needed, outlier low/high), zlib-compressed
  (mostly zeros).

A day of a million inputs (each counted at city, province and national level) costs a few megabytes and decodes
back exactly (`decode_inputs`).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from .domain.index_math import REASON_CODES, USED

if TYPE_CHECKING:
    import numpy as np

WIDTHS = {b"1": "<u1", b"2": "<u2", b"4": "<u4", b"8": "<i8"}
LEVEL = 1  # zlib: the fastest level; the reason codes are mostly zeros and compress well anyway


def reason_name(code: int) -> str:
    return "used" if code == USED else REASON_CODES[code].value


def pack_reasons_raw(raw: bytes) -> bytes:
    """Reason codes (one uint8 per input, aligned with the sorted ids), compressed."""
    return zlib.compress(raw, LEVEL)


def encode_ids(ids_sorted: np.ndarray) -> bytes:
    """The `input_ids` blob of ascending ids (the computation builds the same bytes vectorised)."""
    import numpy as np

    deltas = np.diff(np.asarray(ids_sorted, dtype=np.int64), prepend=np.int64(0))
    wide = int(deltas.max()) if len(deltas) else 0
    tag = b"1" if wide < 1 << 8 else b"2" if wide < 1 << 16 else b"4" if wide < 1 << 32 else b"8"
    return tag + deltas.astype(WIDTHS[tag]).tobytes()


def decode_inputs(input_ids: bytes, input_reasons: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 ascending, reason codes uint8) of one stored series version."""
    import numpy as np

    tag, body = input_ids[:1], input_ids[1:]
    ids = np.cumsum(np.frombuffer(body, dtype=WIDTHS[tag]).astype(np.int64))
    reasons = np.frombuffer(zlib.decompress(input_reasons), dtype=np.uint8)
    if len(reasons) != len(ids):
        raise ValueError("audit blob: ids and reasons differ in length")
    return ids, reasons
