"""The bundle's optional files for the tools a team already uses, each made from the export's label table
(:func:`tac_core.workspace.export.label_table`, one row per distinct image: duplicates are left out here, since
their bytes are their original's).

- **Folder tree** ``images/<label>/<file>`` (ImageNet layout): what ``torchvision.datasets.ImageFolder``,
  FiftyOne's ``ImageClassificationDirectoryTree`` and CVAT's ImageNet import read. Folder names
  (:func:`class_folders`) are the labels made valid on every OS (no ``/``, ``\\``, control or reserved
  characters, no leading dot, Windows device names prefixed) and unique ignoring case; files keep their names,
  a name taken twice in one folder gets ``~<first 8 hex of its sha256>``. Files are hard links to the
  originals where the file system allows (no copy, no space), copies otherwise; a file that is gone since it
  was added is listed as missing.
- **Label Studio** tasks (image classification): ``data.image`` is the file in the bundle (its tree path, or
  its relative path without a tree); a verified label is an *annotation* (a person decided it), any other a
  *prediction* scored by the run's confidence. :func:`label_studio_config` is the matching labelling config.
- **COCO-style classification**: ``images``, ``categories`` (ids from 1, in label order) and one
  ``annotations`` entry per image with its ``category_id`` and ``score``, no boxes.

Labels here are the names as the reviewer typed them: only CSV cells are made spreadsheet-safe.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable
from xml.sax.saxutils import quoteattr

import pandas as pd

from ..inputs.zips import safe_component

TREE_FOLDER = "images"
LABEL_STUDIO_FROM, LABEL_STUDIO_TO = "label", "image"


@dataclass
class Tree:
    """What :func:`write_tree` wrote: each row's file inside the bundle, and how it got there."""

    files: list[str] = field(default_factory=list)  # per row: "images/<folder>/<name>", its relative path if missing
    linked: int = 0
    copied: int = 0
    missing: list[str] = field(default_factory=list)  # relative paths of files that no longer exist


def class_folders(labels: Iterable[str]) -> dict[str, str]:
    """A folder name per distinct label (module docstring), assigned in label order so it is reproducible."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for label in sorted(set(labels)):
        base = safe_component(label.replace("/", "_").replace("\\", "_"))
        if base.startswith("."):
            base = "_" + base
        name, n = base, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base} ({n})"
        taken.add(name.casefold())
        folders[label] = name
    return folders


def write_tree(table: pd.DataFrame, bundle: Path, folders: dict[str, str]) -> Tree:
    """Each row's file as ``images/<folder of its label>/<name>`` under ``bundle``."""
    tree, used = Tree(), set()
    for label, relative, sha, source in zip(table["label"], table["relative_path"], table["sha256"], table["path"]):
        name = safe_component(PurePosixPath(relative).name)
        key = f"{folders[label]}/{name}".casefold()
        if key in used:
            stem, ext = os.path.splitext(name)
            name = f"{stem}~{sha[:8]}{ext}"
            key = f"{folders[label]}/{name}".casefold()
        used.add(key)
        inside = f"{TREE_FOLDER}/{folders[label]}/{name}"
        target = bundle / inside
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
            tree.linked += 1
        except OSError:
            try:
                shutil.copyfile(source, target)
                tree.copied += 1
            except OSError:
                tree.missing.append(relative)
                inside = relative
        tree.files.append(inside)
    return tree


def label_studio_tasks(table: pd.DataFrame, files: list[str], run_id: int) -> list[dict]:
    """One Label Studio task per row; ``files[i]`` is row i's image inside the bundle."""
    tasks = []
    for row, file in zip(_records(table), files):
        result = [{"from_name": LABEL_STUDIO_FROM, "to_name": LABEL_STUDIO_TO, "type": "choices",
                   "value": {"choices": [row["label"]]}}]
        task = {"data": {"image": file, "relative_path": row["relative_path"], "sha256": row["sha256"],
                         "cluster_id": row["cluster_id"], "source": row["source"]}}
        if row["verified"]:
            task["annotations"] = [{"result": result}]
        else:
            task["predictions"] = [{"model_version": f"TAC Studio run {run_id}", "result": result,
                                    "score": round(row["confidence"], 4)}]
        tasks.append(task)
    return tasks


def label_studio_config(labels: Iterable[str]) -> str:
    """The labelling config the tasks fit: one image, one single choice among the labels."""
    choices = "".join(f"    <Choice value={quoteattr(label)}/>\n" for label in sorted(set(labels)))
    return (f"<View>\n  <Image name=\"{LABEL_STUDIO_TO}\" value=\"$image\"/>\n"
            f"  <Choices name=\"{LABEL_STUDIO_FROM}\" toName=\"{LABEL_STUDIO_TO}\" choice=\"single\">\n"
            f"{choices}  </Choices>\n</View>\n")


def coco_classification(table: pd.DataFrame, files: list[str], info: dict) -> dict:
    """A COCO-style classification file: images, categories and one label per image (no boxes)."""
    categories = {label: number for number, label in enumerate(sorted(set(table["label"])), start=1)}
    images, annotations = [], []
    for number, (row, file) in enumerate(zip(_records(table), files), start=1):
        images.append({"id": number, "file_name": file, "width": row["width"], "height": row["height"],
                       "sha256": row["sha256"]})
        annotations.append({"id": number, "image_id": number, "category_id": categories[row["label"]],
                            "score": round(row["confidence"], 4), "verified": row["verified"]})
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": number, "name": label, "supercategory": ""} for label, number in categories.items()]}


def _records(table: pd.DataFrame) -> list[dict]:
    """The rows as dicts of plain Python values, JSON-ready (through numpy: iterating a frame, or a pyarrow
    string column, costs seconds at 50k rows)."""
    columns = [c for c in table.columns if c not in ("path", "image_id", "duplicate_of", "top_anchors")]
    values = [table[c].to_numpy(dtype=object if table[c].dtype.kind not in "biuf" else None).tolist()
              for c in columns]
    return [dict(zip(columns, row)) for row in zip(*values)]
