"""What a search asks for, beyond its query: kinds, paging, order, a score cut-off and filters.

One definition for the HTTP API (FastAPI takes these models as its request schema), the CLI
and the core. Filters are checked here — unknown keys, unparsable dates, bounds the wrong way
round — and become a :class:`~msearch.store.vectors.Where` that the vector store applies
inside its query (payload indexes), so a filter never means fetching more and dropping.
"""

from __future__ import annotations

import posixpath
from datetime import date, datetime, timezone
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from msearch.errors import BadInput
from msearch.store.vectors import Where

Sort = Literal["relevance", "date"]


class Filters(BaseModel):
    """Which files may appear. Dates are ISO 8601 (``2024-05-01`` or ``2024-05-01T12:00:00+02:00``;
    without a zone, UTC); ``modified_before`` excludes its own instant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path_prefix: list[str] | None = Field(
        None, description="Only files inside this folder, or inside any of these folders (absolute paths).")
    modified_after: datetime | None = Field(None, description="Only files modified at or after this date.")
    modified_before: datetime | None = Field(None, description="Only files modified before this date.")
    min_size: int | None = Field(None, ge=0, description="Only files of at least this many bytes.")
    max_size: int | None = Field(None, ge=0, description="Only files of at most this many bytes.")
    min_duration_s: float | None = Field(None, ge=0, description="Only recordings at least this long (seconds).")
    max_duration_s: float | None = Field(None, ge=0, description="Only recordings at most this long (seconds).")

    @field_validator("path_prefix", mode="before")
    @classmethod
    def _folders(cls, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError("a folder or a non-empty list of folders")
        out = []
        for folder in value:
            if not isinstance(folder, str) or not folder.startswith("/") or "\x00" in folder:
                raise ValueError(f"{folder!r} is not an absolute folder path")
            out.append(posixpath.normpath(folder) if folder != "/" else "/")
        return list(dict.fromkeys(out))

    @field_validator("modified_after", "modified_before", mode="before")
    @classmethod
    def _date(cls, value):
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO 8601 date or date and time") from None
        raise ValueError("an ISO 8601 date or date and time")

    @field_validator("modified_after", "modified_before")
    @classmethod
    def _utc(cls, value: datetime | None):
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
        try:
            value.timestamp()
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{value.isoformat()} is out of range") from None
        return value

    @model_validator(mode="after")
    def _bounds(self):
        for low, high in (("modified_after", "modified_before"), ("min_size", "max_size"),
                          ("min_duration_s", "max_duration_s")):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} is after {high}")
        return self

    def where(self) -> Where:
        """The store's form of these filters."""
        return Where(
            dirs=tuple(self.path_prefix) if self.path_prefix else None,
            mtime_gte=self.modified_after.timestamp() if self.modified_after else None,
            mtime_lt=self.modified_before.timestamp() if self.modified_before else None,
            size_gte=self.min_size, size_lte=self.max_size,
            duration_gte=self.min_duration_s, duration_lte=self.max_duration_s,
        )

    def admits(self, f: dict) -> bool:
        """Whether one file row (``path``, ``mtime``; size and duration are the content's, already
        filtered by the store) passes: a content held by several files matched the store's filter
        if any of them does, each file is then checked on its own."""
        if self.path_prefix and not any(f["path"].startswith(p.rstrip("/") + "/") for p in self.path_prefix):
            return False
        mtime = f.get("mtime")
        if self.modified_after is not None and (mtime is None or mtime < self.modified_after.timestamp()):
            return False
        if self.modified_before is not None and (mtime is None or mtime >= self.modified_before.timestamp()):
            return False
        return True


class SearchOptions(BaseModel):
    """Kinds, page, order, cut-off and filters of one search (the query itself apart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: list[str] | None = Field(None, description="Only these kinds: text, image, video, audio, page.")
    top_k: int | None = Field(None, description="How many results on this page (default 10).")
    offset: int = Field(0, ge=0, description="Skip this many results (paging).")
    sort: Sort = Field("relevance", description="relevance, or date: newest first among the matches.")
    min_relative_score: float | None = Field(
        None, ge=0, le=1, description="Drop results scoring under this fraction of the best result's score.")
    filters: Filters | None = Field(None, description="Which files may appear.")


def check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The kinds asked for (all when none), or :class:`BadInput` naming the unknown ones."""
    from msearch.detect import KINDS

    if not kinds:
        return KINDS
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise BadInput(f"unknown kind(s) {bad}; kinds are {list(KINDS)}")
    return tuple(dict.fromkeys(kinds))


def options(**values) -> SearchOptions:
    """SearchOptions from plain values (the CLI's, a form's), with errors as :class:`BadInput`."""
    try:
        return SearchOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        raise BadInput(describe(e)) from e


def describe(e: ValidationError) -> str:
    """A validation error in one line: where, and what was wrong."""
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"] if x != "__root__")
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def iso(timestamp: float | None) -> str | None:
    """An epoch time as ISO 8601 in UTC (``2024-05-01T10:00:00Z``)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
