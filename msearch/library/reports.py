"""What the owner reports and resets: one file (``show``), the index (``status``), whether the
catalog and the vectors agree (``verify``), and ``reset``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from msearch.embed import KIND_ROLES
from msearch.errors import BadInput, NotFound
from msearch.library.claims import models_of
from msearch.ranking import thumbnail_url

RESET_TYPES = ("all", "database", "index")


def _json(value):
    if value is None or isinstance(value, (dict, list)):
        return value
    return json.loads(value)


class Reports:
    def __init__(self, settings, catalog, vectors, thumbs):
        self.settings, self.catalog, self.vectors, self.thumbs = settings, catalog, vectors, thumbs

    def models(self) -> dict[str, str]:
        return {s: self.catalog.get_meta(f"model:{s}") for s in self.vectors.spaces()}

    def show(self, key: str) -> dict:
        key = str(key)
        row = self.catalog.file(key) or self.catalog.file(str(Path(key).expanduser().resolve()))
        if row is None:
            raise NotFound(f"{key!r} is not in the index")
        units = []
        if row["content_hash"]:
            for u in self.catalog.units(row["content_hash"]):
                units.append({
                    "unit": u["unit"], "kind": u["kind"], "space": u["space"], "start_s": u["start_s"],
                    "end_s": u["end_s"], "page": u["page"], "char_start": u["char_start"],
                    "char_end": u["char_end"], "text": u["text"], "thumbnail": thumbnail_url(u["thumbnail"]),
                })
        out = {k: row.get(k) for k in ("file_id", "path", "kind", "format", "status", "error", "warning", "size",
                                       "mtime", "content_hash", "units_expected", "indexed_at")}
        out["models"] = models_of(row)
        out["timings"] = _json(row["timings"])
        out["media"] = _json(row.get("media"))
        out["units"] = units
        timed = sorted((u for u in units if u["start_s"] is not None), key=lambda u: (u["start_s"], u["unit"]))
        out["transcript"] = [{"start_s": u["start_s"], "end_s": u["end_s"], "text": u["text"]}
                             for u in timed if u["space"] == "text"]
        out["sound_windows"] = [{"start_s": u["start_s"], "end_s": u["end_s"]} for u in timed if u["space"] == "clap"]
        return out

    def status(self) -> dict:
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        total: dict[str, int] = defaultdict(int)
        for r in self.catalog.counts():
            counts[r["kind"]][r["status"]] = r["files"]
            total[r["status"]] += r["files"]
        return {
            "data_dir": str(self.settings.data_dir),
            "files": dict(total),
            "kinds": dict(counts),
            "points": {space: self.vectors.count(space) for space in self.vectors.spaces()},
            "points_by_kind": {space: {kind: n for kind in KIND_ROLES if (n := self.vectors.count(space, [kind]))}
                               for space in self.vectors.spaces()},
            "models": self.models(),
            "failed": self.catalog.failed(),
            "warnings": self.catalog.warned(),
            "skipped": self.catalog.skipped(),
        }

    def reset(self, reset_type: str) -> dict:
        """``index``: drop every vector, unit and thumbnail, and mark every file pending (the next
        run embeds all again); ``database``: also forget every file; ``all``: also the record of
        which model made each space (a data dir as new)."""
        if reset_type not in RESET_TYPES:
            raise BadInput("reset_type must be one of all, database, index")
        for space in list(self.vectors.spaces()):
            self.vectors.drop_space(space)
        self.catalog.clear_units()
        self.thumbs.clear()
        if reset_type == "index":
            self.catalog.mark_all_pending()
        else:
            self.catalog.clear_files()
        if reset_type == "all":
            self.catalog.clear_meta()
        return {"reset_type": reset_type, **self.status()}

    def verify(self) -> dict:
        """Do the catalog and the vectors agree? Every indexed file's content has all its points
        and units; no point or unit belongs to a content that no file holds."""
        problems: list[dict] = []
        contents = self.catalog.contents()
        units = self.catalog.unit_counts_by_space()
        points: dict[tuple[str, str], int] = defaultdict(int)
        for space in self.vectors.spaces():
            for hit in self.vectors.scroll(space):
                points[(hit.payload.get("content_hash"), space)] += 1
        units_of: dict[str, int] = defaultdict(int)
        for (h, _), n in units.items():
            units_of[h] += n
        for r in self.catalog.indexed_contents():
            h, n = r["content_hash"], r["units_expected"]
            if units_of.get(h, 0) != (n or 0):
                problems.append({"content_hash": h, "problem": f"{units_of.get(h, 0)} units stored, {n} expected",
                                 "paths": self._paths(h)})
        for (h, space), n in sorted(units.items()):
            if contents.get(h) is None:
                problems.append({"content_hash": h, "problem": f"{n} {space} units of a content no file holds"})
            elif contents.get(h) == "pending":
                continue  # a run stopped half-way (a full disk, a kill): the next run's claim redoes it
            elif points.get((h, space), 0) != n:
                problems.append({"content_hash": h, "problem": f"{points.get((h, space), 0)} {space} points "
                                 f"for {n} units", "paths": self._paths(h)})
        for (h, space), n in sorted(points.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            if (h, space) not in units and contents.get(h) != "pending":
                what = "a content no file holds" if contents.get(h) is None else "a content without units"
                problems.append({"content_hash": h, "problem": f"{n} {space} points of {what}"})
        return {"ok": not problems, "files": sum(1 for s in contents.values() if s == "indexed"),
                "points": sum(points.values()), "problems": problems}

    def _paths(self, h: str) -> list[str]:
        return [f["path"] for f in self.catalog.files_with_hashes([h])]
