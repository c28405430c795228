"""Arrow schemas of the rows that flow between pipeline stages (explicit, so that blocks
with missing values still concatenate)."""

import pyarrow as pa

FILES = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()), ("error", pa.string()),
])

HASHED = pa.schema([
    ("run_id", pa.string()), ("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
    ("content_hash", pa.string()), ("kind", pa.string()), ("format", pa.string()), ("error", pa.string()),
    ("speech", pa.string()),  # the transcript (JSON) of an audio or video file
])

_UNIT_FIELDS = [
    ("run_id", pa.string()), ("path", pa.string()), ("content_hash", pa.string()), ("kind", pa.string()),
    ("unit", pa.int32()), ("n_units", pa.int32()), ("space", pa.string()), ("error", pa.string()),
    ("note", pa.string()), ("text", pa.string()), ("char_start", pa.int64()), ("char_end", pa.int64()),
    ("start_s", pa.float64()), ("end_s", pa.float64()), ("page", pa.int32()),
    ("thumbnail", pa.binary()), ("thumb_key", pa.string()), ("decode_s", pa.float64()), ("media", pa.string()),
]

UNITS = pa.schema(_UNIT_FIELDS + [("pixels", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
                                  ("audio", pa.binary())])

EMBEDDED = pa.schema(_UNIT_FIELDS + [
    ("vector", pa.list_(pa.float32())), ("model", pa.string()), ("embed_s", pa.float64()),
    ("sparse_indices", pa.list_(pa.int64())), ("sparse_values", pa.list_(pa.float32())),
    ("multi", pa.list_(pa.list_(pa.float32()))),  # late interaction: one row per token
])

WRITTEN = pa.schema([("units", pa.int64()), ("settled", pa.int64()), ("write_s", pa.float64())])


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows as a table of ``schema``: its columns only, a missing field null. (Iterating a schema
    makes a Field object per column each time: the names are read once.)"""
    names = schema.names
    return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows], schema=schema)
