"""The sources and images of a workspace: what each add stored (usable, duplicate or skipped, with the reason).

Each add is one *source* stored in one transaction (:meth:`ImagesMixin.add_image_set`), so a crash never leaves
half an add listed. Adding by upload needs the ``reviewer`` role, adding a folder of the server by its path
the ``admin`` role (:mod:`tac_core.workspace.access`); each add is recorded in the activity log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd

from ..errors import InvalidInputError
from ..inputs.imageset import ImageSet, storable_text
from .store import utc_now

SOURCE_KINDS = ("folder", "upload", "zip", "path")
IMAGE_STATUSES = ("ok", "skipped", "duplicate")


@dataclass(frozen=True)
class AddedImages:
    """What :meth:`ImagesMixin.add_image_set` stored: ids of the new usable images and counts of the others."""

    source_id: int
    image_ids: tuple[int, ...]
    duplicates: int
    skipped: int


class ImagesMixin:
    """The image methods of :class:`tac_core.workspace.workspace.Workspace` (kept apart to keep modules small)."""

    def add_image_set(self, image_set: ImageSet, source_kind: str, source_location: str) -> AddedImages:
        """Store every record of a scan under a new source, in one transaction.

        An ok image whose bytes are already in the workspace is stored as a duplicate of that image (its
        ``duplicate_of`` is the existing image id), not added again; duplicates within the set point at the
        image their first copy became. Skipped files are kept with their reason for the skipped list.
        """
        if source_kind not in SOURCE_KINDS:
            raise InvalidInputError(f"source kind {source_kind!r} is not one of {', '.join(SOURCE_KINDS)}.")
        rows, new_ids, counts = [], [], {"duplicate": 0, "skipped": 0}
        with self.transaction() as conn:
            self.require("add_server_folder" if source_kind == "path" else "add_images", conn=conn)
            cur = conn.execute("INSERT INTO sources (kind, location, root, added) VALUES (?, ?, ?, ?)",
                               (source_kind, str(source_location), str(image_set.root), utc_now()))
            source_id = cur.lastrowid
            known = {sha: (image_id, rel) for sha, image_id, rel in
                     conn.execute("SELECT sha256, id, rel_path FROM images WHERE status = 'ok'")}
            next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM images").fetchone()[0]
            id_of_rel: dict[str, int] = {}
            for record in image_set.records:
                status, reason, duplicate_of = record.status, record.reason, None
                path, rel_path = storable_text(record.path), storable_text(record.rel_path)
                if (path, rel_path) != (record.path, record.rel_path):
                    status, reason = "skipped", "the file name is not valid UTF-8; rename the file"
                elif status == "ok" and record.sha256 in known:
                    duplicate_of, first_rel = known[record.sha256]
                    status, reason = "duplicate", f"same content as {first_rel}, already in this workspace"
                elif status == "duplicate":
                    duplicate_of = id_of_rel.get(record.duplicate_of or "") or known.get(record.sha256, (None,))[0]
                    if duplicate_of is None:  # its first copy could not be stored: this copy is the image
                        status, reason = "ok", ""
                image_id, next_id = next_id, next_id + 1
                if status == "ok":
                    known[record.sha256] = (image_id, record.rel_path)
                    new_ids.append(image_id)
                else:
                    counts[status] += 1
                id_of_rel[record.rel_path] = image_id if status == "ok" else duplicate_of
                rows.append((image_id, source_id, path, rel_path, record.sha256, record.size_bytes,
                             record.width, record.height, status, reason, duplicate_of))
            conn.executemany("INSERT INTO images (id, source_id, path, rel_path, sha256, size_bytes, width, "
                             "height, status, reason, duplicate_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.record("images added", {"source_id": source_id, "kind": source_kind, "added": len(new_ids),
                                         **counts}, conn=conn)
        return AddedImages(source_id, tuple(new_ids), counts["duplicate"], counts["skipped"])

    def images(self, status: Optional[str] = None) -> pd.DataFrame:
        """Every stored record (or those with ``status``), with its source kind, by id."""
        if status is not None and status not in IMAGE_STATUSES:
            raise InvalidInputError(f"image status {status!r} is not one of {', '.join(IMAGE_STATUSES)}.")
        where, params = ("WHERE i.status = ?", (status,)) if status else ("", ())
        frame = self._frame(
            "SELECT i.id, i.source_id, s.kind AS source_kind, i.path, i.rel_path, i.sha256, i.size_bytes, i.width, "
            f"i.height, i.status, i.reason, i.duplicate_of FROM images i JOIN sources s ON s.id = i.source_id "
            f"{where} ORDER BY i.id", params)
        frame["duplicate_of"] = frame["duplicate_of"].astype("Int64")
        return frame

    def image_counts(self) -> dict[str, int]:
        """Images per status plus ``total``, for the sidebar."""
        counts = dict.fromkeys(IMAGE_STATUSES, 0)
        counts.update(self.connection().execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        counts["total"] = sum(counts.values())
        return counts

    def skipped_images(self) -> pd.DataFrame:
        """The records the pipeline does not use (skipped and duplicates), each with its reason."""
        return self.images().query("status != 'ok'").reset_index(drop=True)

    def sources(self) -> pd.DataFrame:
        """Where images came from: one row per add (kind, location as the user gave it, scanned root)."""
        return self._frame("SELECT id, kind, location, root, added FROM sources ORDER BY id")
