"""Persistent embedding cache: key → float32 vector, in append-only shards written one batch at a time.

Each :meth:`VectorStore.put_many` writes one shard: ``shard-00001.npy`` (the vectors) and then
``shard-00001.keys.txt`` (one key per line), each atomically. A shard counts only once both files exist and
agree, so a crash loses at most the batch being written and never leaves a store that cannot be opened.
A shard of the wrong shape or type, or holding NaN or infinite values, is ignored with a warning (its keys are
encoded again), so a damaged or foreign file never mixes wrong vectors into a run.
Shards are never rewritten, which keeps concurrent readers safe; a reader picks up shards written by others
when it looks for a key it does not have. Writers that write often (the vocabulary every few seconds) leave
many small shards: :meth:`VectorStore.compact` merges them into one new shard, written before the small ones
are removed, so a reader never misses a key (a shard removed under a reader's feet is skipped silently).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..atomic import write_npy, write_text
from ..errors import InvalidInputError

_SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.npy$")
_HASH_CHUNK = 1 << 20
SMALL_SHARD_ROWS = 4096  # shards below this size are merged by VectorStore.compact
_file_hashes: dict[tuple[str, int, int], str] = {}
CACHE_ENV = "TAC_STUDIO_CACHE"


def default_cache_root() -> Path:
    """Where embeddings are cached outside a workspace (the CLI, scripts, benchmarks): ``$TAC_STUDIO_CACHE``,
    else ``~/.cache/tac-studio``. A workspace keeps its own cache in its folder."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tac-studio").expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes: the cache key of an image, and the identity of a weights file.

    Remembered per (path, size, modification time) in this process, so re-runs in the app and repeated
    identity checks of a 600 MB checkpoint do not read the file again.
    """
    stat = os.stat(path)
    memo_key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                digest.update(chunk)
        _file_hashes[memo_key] = digest.hexdigest()
    return _file_hashes[memo_key]


class VectorStore:
    """Key (str) → float32 vector of length ``dim``, persisted in ``folder``.

    Shards are read into memory on opening (many small memory maps would each hold a file descriptor). A key
    is written once: putting a key that is already stored keeps the stored vector.
    """

    def __init__(self, folder: str | os.PathLike, dim: int) -> None:
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise InvalidInputError(f"Vector length {dim!r} must be a positive integer.")
        self.folder = Path(folder)
        self.dim = int(dim)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._shards: list[np.ndarray] = []
        self._shard_number: dict[str, int] = {}  # shard name -> its number in self._shards
        self._rejected: set[str] = set()  # complete but unusable shards: warned about once, never read again
        self._pending: set[str] = set()  # shards without a keys file yet: warned about once, read again later
        self._index: dict[str, tuple[int, int]] = {}  # key -> (shard number in self._shards, row)
        self._load_new_shards()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def get_many(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Vectors for ``keys`` in order (rows of missing keys are NaN) and the list of missing keys."""
        if any(key not in self._index for key in keys):
            self._load_new_shards()
        out = np.full((len(keys), self.dim), np.nan, dtype=np.float32)
        rows_by_shard: dict[int, tuple[list[int], list[int]]] = {}
        missing = []
        for position, key in enumerate(keys):
            found = self._index.get(key)
            if found is None:
                missing.append(key)
                continue
            positions, rows = rows_by_shard.setdefault(found[0], ([], []))
            positions.append(position)
            rows.append(found[1])
        for shard, (positions, rows) in rows_by_shard.items():
            out[positions] = self._shards[shard][rows]
        return out, missing

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> int:
        """Store the vectors of keys not stored yet as one new shard; returns how many were added."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(keys), self.dim):
            raise InvalidInputError(
                f"Expected {len(keys)} vectors of length {self.dim} for {self.folder}, got shape {vectors.shape}."
            )
        for key in keys:
            if not isinstance(key, str) or not key or "\n" in key or "\r" in key or key != key.strip():
                raise InvalidInputError(f"Cache key {key!r} must be a non-empty one-line string without edge spaces.")
        self._load_new_shards()
        new_rows: dict[str, int] = {}
        for row, key in enumerate(keys):
            if key not in self._index and key not in new_rows:
                new_rows[key] = row
        if not new_rows:
            return 0
        if not np.isfinite(vectors[list(new_rows.values())]).all():
            raise InvalidInputError(f"Refusing to cache non-finite vectors in {self.folder}.")
        shard_vectors = np.ascontiguousarray(vectors[list(new_rows.values())])
        name = self._claim_shard_name()
        write_npy(self.folder / f"{name}.npy", shard_vectors)
        write_text(self.folder / f"{name}.keys.txt", "".join(f"{key}\n" for key in new_rows))
        self._add_shard(name, shard_vectors, list(new_rows))
        return len(new_rows)

    def compact(self, below: int = SMALL_SHARD_ROWS) -> int:
        """Merge every shard of fewer than ``below`` rows into one new shard, then remove them; returns how many
        shards were merged (0 when fewer than two are that small). Keys stay as they were (first shard wins)."""
        self._load_new_shards()
        small = [(name, shard) for name, shard in self._names_in_order() if len(self._shards[shard]) < below]
        if len(small) < 2:
            return 0
        keys_of = {shard: [] for _, shard in small}
        for key, (shard, row) in self._index.items():
            if shard in keys_of:
                keys_of[shard].append((row, key))
        keys = [key for _, shard in small for _, key in sorted(keys_of[shard])]
        vectors = np.concatenate([self._shards[shard][[row for row, _ in sorted(keys_of[shard])]]
                                  for _, shard in small]) if keys else np.empty((0, self.dim), np.float32)
        name = self._claim_shard_name()
        write_npy(self.folder / f"{name}.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        write_text(self.folder / f"{name}.keys.txt", "".join(f"{key}\n" for key in keys))
        for old, _ in small:
            (self.folder / f"{old}.npy").unlink(missing_ok=True)
            (self.folder / f"{old}.keys.txt").unlink(missing_ok=True)
        self._shards, self._shard_number, self._index = [], {}, {}
        self._load_new_shards()
        return len(small)

    # ------------------------------------------------------------------------------------------ internals

    def _names_in_order(self) -> list[tuple[str, int]]:
        """(shard name, its number in self._shards) of the loaded shards, oldest first."""
        return sorted(self._shard_number.items(), key=lambda item: int(item[0].split("-")[1]))

    def _claim_shard_name(self) -> str:
        """Reserve the next shard number by creating its file exclusively, so two writers never share one."""
        taken = [int(m.group(1)) for p in self.folder.iterdir() if (m := _SHARD_PATTERN.match(p.name))]
        number = max(taken, default=0) + 1
        while True:
            name = f"shard-{number:05d}"
            try:
                os.close(os.open(self.folder / f"{name}.npy", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return name
            except FileExistsError:
                number += 1

    def _load_new_shards(self) -> None:
        names = sorted(m.group(0)[:-4] for p in self.folder.iterdir() if (m := _SHARD_PATTERN.match(p.name)))
        for name in names:
            if name in self._shard_number or name in self._rejected:
                continue
            loaded = self._read_shard(name)
            if loaded is not None:
                self._add_shard(name, *loaded)

    def _read_shard(self, name: str) -> tuple[np.ndarray, list[str]] | None:
        keys_path = self.folder / f"{name}.keys.txt"
        if not (self.folder / f"{name}.npy").is_file():
            return None  # merged into another shard by compact() since the folder was listed
        if not keys_path.is_file():
            if name not in self._pending:
                warnings.warn(f"Ignoring cache shard {self.folder / name}.npy: its keys file is missing "
                              "(incomplete write).")
                self._pending.add(name)
            return None
        try:
            keys = keys_path.read_text(encoding="utf-8").splitlines()
            vectors = np.load(self.folder / f"{name}.npy", allow_pickle=False)
        except FileNotFoundError:
            return None  # merged into another shard by compact() meanwhile
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            warnings.warn(f"Ignoring unreadable cache shard {self.folder / name}.npy ({exc}).")
            self._rejected.add(name)
            return None
        if vectors.ndim != 2 or vectors.shape != (len(keys), self.dim) or vectors.dtype != np.float32:
            warnings.warn(
                f"Ignoring cache shard {self.folder / name}.npy: it holds {vectors.shape} {vectors.dtype} for "
                f"{len(keys)} keys, expected float32 vectors of length {self.dim}."
            )
            self._rejected.add(name)
            return None
        if not np.isfinite(vectors).all():  # put_many never writes these: the file was damaged or replaced
            warnings.warn(f"Ignoring cache shard {self.folder / name}.npy: it holds NaN or infinite values.")
            self._rejected.add(name)
            return None
        return vectors, keys

    def _add_shard(self, name: str, vectors: np.ndarray, keys: Iterable[str]) -> None:
        shard = len(self._shards)
        self._shards.append(vectors)
        self._shard_number[name] = shard
        for row, key in enumerate(keys):
            self._index.setdefault(key, (shard, row))
