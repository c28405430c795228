"""Planning and claiming: which listed files need hashing, and which hashed contents need
decoding and embedding (a content is embedded once, whichever paths hold it)."""

from __future__ import annotations

import json
import time

from msearch.embed import KIND_ROLES, roles_for_kind
from msearch.ids import file_id_for
from msearch.library.contents import Contents
from msearch.library.runs import RunLedger
from msearch.store.catalog import Catalog


def models_of(row: dict) -> dict:
    value = row.get("models")
    return (json.loads(value) if isinstance(value, str) else value) or {}


class Claims:
    def __init__(self, settings, catalog: Catalog, ledger: RunLedger, contents: Contents, give_way=lambda: None,
                 check_space=lambda need=0: None):
        self.settings, self.catalog, self.ledger, self.contents = settings, catalog, ledger, contents
        self.give_way = give_way  # called between steps: lets a search in the same process go first
        self.check_space = check_space  # raises DiskFull before a write the disk cannot take

    def backoff(self, row: dict) -> float:
        """Seconds before an unchanged file that failed is tried again: doubling per failure."""
        idx = self.settings.index
        return min(idx.retry_backoff_s * 2 ** max(0, (row.get("attempts") or 1) - 1), idx.retry_backoff_max_s)

    def plan(self, run_id: str, entries: list[dict], models: dict[str, str]) -> list[dict]:
        """Drop files whose size and mtime are unchanged since they were indexed with these models."""
        known = self.catalog.files_by_path([e["path"] for e in entries])
        todo = []
        now = time.time()
        for e in entries:
            old = known.get(e["path"])
            same = old and old["size"] == e["size"] and old["mtime"] == e["mtime"]
            if same and old["status"] == "indexed" and models_of(old) == roles_for_kind(old["kind"], models):
                self.ledger.record(run_id, "unchanged", e["path"])
            elif same and old["status"] == "failed" and now < old["updated_at"] + self.backoff(old):
                wait = old["updated_at"] + self.backoff(old) - now
                self.ledger.record(run_id, "failed", e["path"],
                                   f"{old['error']} (tried {old['attempts'] or 1}x; next try in {wait:.0f} s, "
                                   "or at once when the file changes)")
            else:
                todo.append(e)
        return todo

    def claim(self, run_id: str, rows: list[dict], models: dict[str, str], missing: dict[str, str]) -> list[dict]:
        """Record hashed files; return the ones whose content must be decoded and embedded.

        ``models``: the available roles; ``missing``: role -> why it is unavailable.
        """
        known = self.catalog.files_by_path([r["path"] for r in rows])
        self.give_way()
        copies: dict[str, list[dict]] = {}  # indexed files of the same contents, elsewhere
        for f in self.catalog.files_with_hashes([r["content_hash"] for r in rows if r.get("content_hash")], "indexed"):
            copies.setdefault(f["content_hash"], []).append(f)
        self.give_way()
        updates, emit = [], []
        fresh, replaced = [], []  # contents about to be embedded; contents a path left
        restamp = []  # indexed contents whose files changed (a copy, a touched file)
        claimed = self.ledger.claimed.setdefault(run_id, set())
        for r in rows:
            path, h, kind = r["path"], r.get("content_hash"), r.get("kind")
            old = known.get(path)
            fid = file_id_for(path)
            if fid in claimed and (h is None or old and old["content_hash"] == h):
                # Claimed by this run already: Ray retries a task whose worker died after its claim.
                # Its file is recorded; its content is decoded again unless it is settled, or
                # being embedded by another run.
                if h is not None and self.ledger.inflight.get(h) == run_id:
                    emit.append({**r, "run_id": run_id})
                continue
            claimed.add(fid)
            row = {
                "file_id": fid, "path": path, "size": r.get("size"), "mtime": r.get("mtime"),
                "content_hash": h, "kind": kind, "format": r.get("format"), "status": "pending",
                "models": roles_for_kind(kind, models), "units_expected": None,
                "attempts": (old.get("attempts") or 0) if old and old["status"] == "failed" else 0,
            }
            if r.get("error"):
                row.update(status="failed", error=r["error"], attempts=row["attempts"] + 1)
                if h is None and old:  # unreadable now: keep what it was, in case it comes back
                    row.update(content_hash=old["content_hash"], kind=old["kind"], format=old["format"])
                    h = old["content_hash"]
            elif kind is None:
                fmt = r.get("format")
                row.update(status="skipped", error="empty file" if fmt == "empty" else f"unrecognised content ({fmt})")
            elif kind not in KIND_ROLES:
                row.update(status="skipped", error=f"{kind} files are not indexed by this version of msearch")
            elif not row["models"]:
                why = [missing[r] for r in KIND_ROLES[kind] if r in missing]
                row.update(status="skipped", error=" ".join(dict.fromkeys(why)) or f"no model indexes {kind} files")
            elif old and old["content_hash"] == h and old["status"] == "indexed" and models_of(old) == row["models"]:
                row.update(status="indexed", units_expected=old["units_expected"],
                           indexed_at=old["indexed_at"], timings=old["timings"], media=old.get("media"),
                           warning=old.get("warning"))
                self.ledger.record(run_id, "unchanged", path)
                if old["mtime"] != r.get("mtime"):
                    restamp.append(h)  # touched: the same bytes, a new modification time
            else:
                done = next((f for f in copies.get(h, []) if models_of(f) == row["models"]), None)
                facts = {"path": path, "mtime": r.get("mtime"), "size": r.get("size")}
                if done is not None:
                    row.update(status="indexed", units_expected=done["units_expected"], indexed_at=time.time(),
                               timings=done["timings"], media=done.get("media"), warning=done.get("warning"))
                    self.ledger.record(run_id, "indexed", path)
                    restamp.append(h)  # one more file holds this content
                elif h in self.ledger.inflight:
                    # The same content is being embedded for another path: share it; its points
                    # get this file's fields too once it is settled.
                    self.ledger.files[h].append(facts)
                    self.ledger.restamp.add(h)
                else:
                    self.ledger.inflight[h] = run_id
                    self.ledger.files[h].append(facts)
                    fresh.append(h)
                    emit.append({**r, "run_id": run_id})
            if row["status"] == "indexed":
                row["attempts"] = 0
            if row["status"] in ("failed", "skipped"):
                self.ledger.record(run_id, row["status"], path, row["error"])
            updates.append(row)
            if old and old["content_hash"] and old["content_hash"] != h:
                replaced.append(old["content_hash"])
        self.give_way()
        self.check_space()
        self.catalog.upsert_files(updates)
        self.give_way()
        # What an interrupted earlier try left of a content (its units are written before its
        # points, so a content without units has no points either).
        self.contents.drop(sorted(self.catalog.hashes_with_units(fresh)))
        self.contents.collect(replaced)
        self.contents.restamp(restamp)
        return emit
