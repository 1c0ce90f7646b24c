"""Cosine nearest neighbours that scale: exact in bounded row blocks, approximate (inverted lists) for large N.

Exact search multiplies a block of rows with all rows and keeps each row's top k. A block holds at most
:data:`BLOCK_ELEMENTS` similarities (128 MB; 1 GB on a GPU), so 200,000 points never need an n × n matrix, nor
even 4096 × n. It costs O(N²d): 200,000 × 512 is ~10-20 minutes on two CPU cores, seconds on a GPU.

Above :data:`APPROX_MIN_ROWS` points on the CPU, ``method="auto"`` searches an inverted-file index with exact
inner products inside the probed lists, the scheme of faiss' IVF-Flat: ``nlist ≈ 4·√N`` lists from a few
seeded spherical Lloyd iterations on at most :data:`TRAIN_POINTS_PER_LIST` points per list
(:func:`coarse_centroids`); each query scans the ``nprobe`` lists nearest to it. It is written in torch with
queries that share a list searched by one matrix product (:class:`_InvertedLists`): faiss' per-query scan ran
at ~2 GFLOP/s on this 2-core machine, slower than the exact search it should replace; the products run at
the speed of the exact search on a fraction of the pairs, on any device. ``nprobe`` is chosen per data set:
a sample of :data:`RECALL_SAMPLE` rows is searched exactly and ``nprobe`` doubles from
:data:`NPROBE_START` until the sample's recall@k reaches :data:`TARGET_RECALL` + :data:`RECALL_MARGIN`, so the
whole search's recall is at least :data:`TARGET_RECALL` with room for the sample's error. Recall counts a found
neighbour as right when it is as similar as the k-th true one (text counterparts hold many ties).
:func:`approximate_knn` returns what it chose and measured (:class:`KnnInfo`). Rows whose probed lists held
fewer than k points are searched exactly. Similarities are exact inner products of the neighbours found, and
everything is seeded: the same data and seed give the same neighbours. On a GPU ``"auto"`` stays exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..numerics import single_cpu_thread

BLOCK_ELEMENTS = 1 << 25  # similarities per block in the exact search: 128 MB of float32
GPU_BLOCK_ELEMENTS = 1 << 28  # 1 GB on a GPU: fewer, larger products
MAX_BLOCK_ROWS = 4096
APPROX_MIN_ROWS = 30_000  # CPU, "auto": from here on (measured: equal at ~15k, 1.5x at 20k, 3x at 50k)
TARGET_RECALL = 0.95
RECALL_MARGIN = 0.01
RECALL_SAMPLE = 500
TRAIN_POINTS_PER_LIST = 32
TRAIN_ITERATIONS = 8
NPROBE_START = 8
METHODS = ("auto", "exact", "approximate")


@dataclass(frozen=True)
class KnnInfo:
    """How a neighbour search was done: ``method``, and for the approximate one the index settings and the
    recall@k measured on ``sample`` rows against exact search."""
    method: str
    n: int
    k: int
    nlist: int = 0
    nprobe: int = 0
    recall: float = 1.0
    sample: int = 0
    exact_rows: int = 0  # rows searched exactly because their probed lists were too small


def block_rows(n: int, block_elements: int = BLOCK_ELEMENTS) -> int:
    """Rows per block of the exact search, so that a block of rows × ``n`` similarities stays bounded."""
    return int(max(16, min(MAX_BLOCK_ROWS, block_elements // max(1, n))))


def use_approximate(n: int, device: str | torch.device = "cpu", method: str = "auto",
                    min_rows: Optional[int] = None) -> bool:
    """Whether ``method`` means the approximate search for ``n`` points on ``device`` (see the module docstring).

    ``min_rows`` overrides :data:`APPROX_MIN_ROWS` (tests use a small one)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method != "auto":
        return method == "approximate"
    threshold = APPROX_MIN_ROWS if min_rows is None else min_rows
    return torch.device(device).type == "cpu" and n >= threshold


def cosine_knn(x: np.ndarray | torch.Tensor, k: int, exclude_self: bool = True,
               device: str | torch.device = "cpu", method: str = "auto",
               random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities of each row's ``k`` most similar rows (unit-norm input), best first.

    ``k`` is clipped to the number of available neighbours, so tiny collections still work. ``method``:
    "auto" (exact, or approximate above :data:`APPROX_MIN_ROWS` rows on the CPU), "exact" or "approximate".
    """
    if use_approximate(len(x), device, method):
        indices, sims, _ = approximate_knn(x, k, exclude_self, random_state=random_state, device=device)
        return indices, sims
    return exact_knn(x, k, exclude_self, device)


def exact_knn(x: np.ndarray | torch.Tensor, k: int, exclude_self: bool = True,
              device: str | torch.device = "cpu", rows: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by cosine in bounded row blocks; ``rows`` limits the queries to those rows (default all)."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x).to(device)
    n = x.shape[0]
    k = max(0, min(k, n - 1 if exclude_self else n))
    queries = torch.arange(n) if rows is None else torch.as_tensor(np.asarray(rows), dtype=torch.long)
    indices = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    if k == 0 or len(queries) == 0:
        return indices, sims
    step = block_rows(n, GPU_BLOCK_ELEMENTS if x.device.type != "cpu" else BLOCK_ELEMENTS)
    for start in range(0, len(queries), step):
        query = queries[start:start + step].to(x.device)
        block = (x[start:start + step] if rows is None else x[query]) @ x.T
        if exclude_self:
            block[torch.arange(len(query), device=block.device), query] = -torch.inf
        top = block.topk(k, dim=1)
        indices[start:start + len(query)] = top.indices.cpu().numpy()
        sims[start:start + len(query)] = top.values.cpu().numpy()
    return indices, sims


def approximate_knn(x: np.ndarray | torch.Tensor, k: int, exclude_self: bool = True, random_state: int = 0,
                    target_recall: float = TARGET_RECALL, nlist: Optional[int] = None, nprobe: Optional[int] = None,
                    device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray, KnnInfo]:
    """Top-k by cosine through an inverted-file index (see the module docstring); also returns :class:`KnnInfo`.

    ``nlist`` defaults to ``4·√N``; ``nprobe`` to the smallest of 8, 16, 32, ... whose recall on the sample
    reaches ``target_recall`` + :data:`RECALL_MARGIN` (all lists at most, which is exact search).
    """
    data = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
    data = data.to(device=device, dtype=torch.float32)
    n = data.shape[0]
    k = max(0, min(k, n - 1 if exclude_self else n))
    if k == 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32), KnnInfo("approximate", n, 0)
    nlist = int(nlist or max(1, min(n // 8, round(4 * math.sqrt(n)))))
    index = _InvertedLists(data, coarse_centroids(data, nlist, random_state))
    rng = np.random.default_rng(random_state)
    sample = np.sort(rng.choice(n, size=min(n, RECALL_SAMPLE), replace=False))
    _, truth = exact_knn(data, k, exclude_self, device, rows=sample)
    if nprobe is None:
        nprobe = min(nlist, NPROBE_START)
        while True:
            with single_cpu_thread(data.device):
                _, found = index.search(sample, nprobe, k, exclude_self)
            if recall_at_k(found, truth) >= target_recall + RECALL_MARGIN or nprobe >= nlist:
                break
            nprobe = min(nlist, 2 * nprobe)
    nprobe = int(min(nprobe, nlist))
    with single_cpu_thread(data.device):  # many small products: 2 threads were 2-10x slower than one here
        indices, sims = index.search(np.arange(n), nprobe, k, exclude_self)
    short = np.flatnonzero((indices < 0).any(axis=1))
    if len(short):
        indices[short], sims[short] = exact_knn(data, k, exclude_self, device, rows=short)
    recall = recall_at_k(sims[sample], truth)
    return indices, sims, KnnInfo("approximate", n, k, nlist, nprobe, recall, len(sample), len(short))


class _InvertedLists:
    """Points grouped by their nearest coarse centroid, searched list by list with dense products.

    A query scans the ``nprobe`` lists whose centroids are most similar to it, as in faiss' IVF-Flat. Queries
    that share their nearest list are searched together: one product with every point of the lists any of
    them probes, with each query's unprobed lists masked out. The result is what a per-query IVF-Flat search
    gives, at the speed of matrix products (faiss' per-query scan ran at ~2 GFLOP/s here).
    """

    def __init__(self, data: torch.Tensor, centroids: torch.Tensor):
        self.data, self.centroids = data, centroids
        self.nlist = len(centroids)
        self.assign = self.probes(torch.arange(len(data), device=data.device), 1)[:, 0]
        self.order = torch.argsort(self.assign, stable=True)  # point ids, list by list, ascending within a list
        counts = torch.bincount(self.assign, minlength=self.nlist)
        self.offsets = torch.zeros(self.nlist + 1, dtype=torch.long, device=data.device)
        self.offsets[1:] = torch.cumsum(counts, dim=0)

    def probes(self, rows: torch.Tensor, nprobe: int) -> torch.Tensor:
        """The ``nprobe`` lists each row scans, nearest first, in bounded row blocks."""
        step = block_rows(self.nlist)
        return torch.cat([(self.data[rows[s:s + step]] @ self.centroids.T).topk(nprobe, dim=1).indices
                          for s in range(0, len(rows), step)])

    def members(self, lists: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.order[self.offsets[c]:self.offsets[c + 1]] for c in lists.tolist()])

    def search(self, rows: np.ndarray, nprobe: int, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of ``rows`` (data indices) within their probed lists; -1 / -inf where fewer than k were found."""
        dev = self.data.device
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=dev)
        probes = self.probes(rows_t, nprobe)
        indices = np.full((len(rows), k), -1, dtype=np.int64)
        sims = np.full((len(rows), k), -np.inf, dtype=np.float32)
        group = probes[:, 0]
        by_group = torch.argsort(group, stable=True)
        bounds = torch.searchsorted(group[by_group], torch.arange(self.nlist + 1, device=dev)).tolist()
        slot = torch.full((self.nlist,), -1, dtype=torch.long, device=dev)
        for c in range(self.nlist):
            if bounds[c] == bounds[c + 1]:
                continue
            pos = by_group[bounds[c]:bounds[c + 1]]  # positions in ``rows`` whose nearest list is c
            query, probe = rows_t[pos], probes[pos]
            lists = torch.unique(probe)
            slot[lists] = torch.arange(len(lists), device=dev)
            cand = self.members(lists)
            probed = torch.zeros((len(pos), len(lists)), dtype=torch.bool, device=dev)
            probed.scatter_(1, slot[probe], True)
            block = self.data[query] @ self.data[cand].T
            block.masked_fill_(~probed[:, slot[self.assign[cand]]], -torch.inf)
            if exclude_self:
                block.masked_fill_(query[:, None] == cand[None, :], -torch.inf)
            slot[lists] = -1
            top = block.topk(min(k, len(cand)), dim=1)
            found = torch.where(torch.isfinite(top.values), cand[top.indices], -1)
            positions = pos.cpu().numpy()
            indices[positions, :found.shape[1]] = found.cpu().numpy()
            sims[positions, :found.shape[1]] = top.values.cpu().numpy()
        return indices, sims


def coarse_centroids(data: torch.Tensor, nlist: int, random_state: int = 0,
                     n_iter: int = TRAIN_ITERATIONS) -> torch.Tensor:
    """Spherical Lloyd iterations from a random start on at most :data:`TRAIN_POINTS_PER_LIST` points per list.

    The lists only need to be reasonable (``nprobe`` is tuned to the recall afterwards), so no k-means++
    seeding and few iterations; seeded, so the same data gives the same lists.
    """
    rng = np.random.default_rng(random_state)
    n = len(data)
    take = min(n, nlist * TRAIN_POINTS_PER_LIST)
    picked = np.sort(rng.choice(n, size=take, replace=False)) if take < n else np.arange(n)
    sample = data[torch.as_tensor(picked, device=data.device)]
    centroids = sample[torch.as_tensor(rng.choice(len(sample), size=nlist, replace=False), device=data.device)]
    step = block_rows(nlist)
    for _ in range(n_iter):
        labels = torch.cat([(sample[s:s + step] @ centroids.T).argmax(dim=1) for s in range(0, len(sample), step)])
        sums = torch.zeros_like(centroids).index_add_(0, labels, sample)
        filled = torch.bincount(labels, minlength=nlist) > 0
        centroids = torch.where(filled[:, None], torch.nn.functional.normalize(sums, dim=1), centroids)
    return centroids


def recall_at_k(found_sims: np.ndarray, true_sims: np.ndarray, tolerance: float = 1e-5) -> float:
    """Share of the found neighbours that belong in the true top k: similarity at least the k-th true one.

    Counting by similarity rather than by index treats tied points alike (text counterparts of a collection
    hold many near-copies, and any of them is as good a neighbour as another).
    """
    if true_sims.size == 0:
        return 1.0
    kth = true_sims[:, -1:] - tolerance
    return float((found_sims >= kth).sum() / true_sims.size)
