"""The data dir's format version: ``data_dir/FORMAT``.

1: before the version was written (no FORMAT file). 2: points carry file fields (search
filters), files a ``warning``. An older data dir is migrated when it is opened (new catalog
columns, file fields added to its points) and then says 2; a data dir written by a newer msearch
is refused, never misread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from msearch.errors import ConfigError

FORMAT = 2


def check_format(data_dir: Path) -> int | None:
    """The data dir's format (None: a new data dir, 1: older than the FORMAT file); refuses a
    newer one or an unreadable FORMAT file."""
    path = Path(data_dir) / "FORMAT"
    if not path.exists():
        return 1 if (Path(data_dir) / "catalog.duckdb").exists() else None
    try:
        found = int(json.loads(path.read_text())["format"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is damaged ({e}); it should read {{\"format\": {FORMAT}}}") from e
    if found > FORMAT:
        raise ConfigError(f"{data_dir} was written by a newer msearch (data format {found}; this one reads up to "
                          f"{FORMAT}): upgrade msearch, or use another MSEARCH_DATA_DIR")
    return found


def write_format(data_dir: Path) -> None:
    path = Path(data_dir) / "FORMAT"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT}) + "\n")
    tmp.replace(path)
