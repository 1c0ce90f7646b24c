"""Re-cluster with the reviewer's decisions: what was verified stays, everything else is re-assigned.

Fixed samples: every verified image, and every member of a verified cluster. They keep their label whatever
the model says. Excluded images get −1 and are never re-assigned. The rest (movable) are re-assigned:

- **Verified clusters are closed.** "Verified cluster" means "its content is confirmed": re-clustering never
  adds members to it (only the reviewer can, by moving an image there — it is then a member, hence fixed)
  and never removes any. Movable images choose among the other (open) clusters.
- **Ids are kept.** Every cluster keeps its id (and so its name); no new id is invented. A cluster with a
  fixed member cannot disappear; an open cluster left with no member vanishes and is reported.
- **Free mode**: constrained spherical k-means on [x, t]: centres start as the current clusters' normalised
  means; fixed points keep their labels and count in their centres; movable points go to the nearest open
  centre; repeat until nothing moves. A non-excluded image with label −1 is simply movable.
- **Trained mode**: the TAC heads are fine-tuned (from the run's ``heads_`` when given, else trained fresh)
  with the fixed samples as labelled anchors — cross-entropy on their clusters with weight
  :data:`ANCHOR_WEIGHT` for each head, next to TAC's own losses — and the image head predicts the rest.
  Fine-tuning is gentle (:data:`FINE_TUNE`: lr 1e-4, 3 epochs, ≥ 150 steps): at TAC's lr of 1e-3 the heads
  drifted and undid more than the anchors taught (on the synthetic bed, seeds 100–103, 150 decisions:
  lr 1e-3 lost 1.5 points against the edits alone, lr 1e-4 gained 0.7; anchor weight 0 / 1 / 3 / 10 gave
  98.6 / 99.4 / 99.4 / 99.4 after audit-order decisions and 95.1 / 96.1 / 96.7 / 96.9 after random ones).
  Fresh heads (no ``heads`` given) train like TAC (:data:`FRESH`). With ``balance="estimated"`` (the
  default, as in :class:`~tac_core.cluster.tac.TAC`) and current cluster sizes that are uneven
  (:func:`~tac_core.cluster.sizes.uneven`), the heads aim at the current size profile (each cluster's share
  split evenly over its columns) instead of equal sizes, and fresh heads start from the current clusters
  (:func:`~tac_core.cluster.heads.warm_start_heads`); even sizes keep the paper's entropy bonus.
  Head columns are named after clusters by overlap: Hungarian matching of the head's argmax with the current
  labels (fixed samples count :data:`FIXED_OVERLAP_WEIGHT`×); extra columns join their majority cluster (a
  merge the head still splits); a cluster left without a column (a split the head never saw) gets a copy of
  its members' majority column, which the anchors then pull apart.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..devices import resolve_device
from ..errors import InvalidInputError
from .sizes import check_balance, uneven
from .heads import fit_heads, head_probabilities, warm_start_heads
from .neighbors import cosine_knn
from ..numerics import flush_denormals
from ..progress import CancelToken, ProgressFn, check_cancel, report
from . import MODES

ANCHOR_WEIGHT = 3.0
FINE_TUNE = {"lr": 1e-4, "epochs": 3, "min_steps": 150}
FRESH = {"lr": 1e-3, "epochs": 20, "min_steps": 600}
FIXED_OVERLAP_WEIGHT = 10.0
CONFIDENCE_TEMPERATURE = 0.05  # free mode, as TAC's own free-mode confidence
CHUNK_ROWS = 16384


@dataclass
class ReclusterResult:
    labels: np.ndarray  # (n,) new labels in the same id space; −1 for excluded
    confidence: np.ndarray  # (n,) p(new cluster); 1.0 for fixed samples, 0 for excluded
    fixed: np.ndarray  # (n,) the samples that kept their label by the reviewer's decision
    moved: int  # non-excluded images whose label changed
    transitions: dict = field(default_factory=dict)  # (from, to) → count over moved images
    vanished: list = field(default_factory=list)  # ids of open clusters left with no member
    probabilities: Optional[np.ndarray] = None  # trained: (n, max id + 1) image head grouped per cluster id
    text_probabilities: Optional[np.ndarray] = None
    mode: str = "free"

    def transitions_frame(self):
        """from, to, count — the largest flows first."""
        import pandas as pd

        rows = sorted(((a, b, c) for (a, b), c in self.transitions.items()), key=lambda r: (-r[2], r[0], r[1]))
        return pd.DataFrame(rows, columns=["from", "to", "count"])

    def summary(self, names: Optional[Mapping[int, str] | Sequence[str]] = None) -> str:
        """A few lines for the user: how many moved, the biggest flows, which clusters vanished."""
        def name(c):
            if c < 0:
                return "no cluster"
            try:
                return f"'{names[c]}'" if names is not None else f"cluster {c}"
            except (KeyError, IndexError):
                return f"cluster {c}"
        lines = [f"{self.moved} image{'s' if self.moved != 1 else ''} moved; "
                 f"{int(self.fixed.sum())} kept by your decisions."]
        for (a, b), count in sorted(self.transitions.items(), key=lambda item: -item[1])[:10]:
            lines.append(f"  {name(a)} → {name(b)}: {count}")
        if self.vanished:
            lines.append("emptied and removed: " + ", ".join(name(c) for c in self.vanished))
        return "\n".join(lines)


def _prepare(image_embeddings, counterparts, labels, verified, verified_clusters, excluded):
    x = np.asarray(image_embeddings, dtype=np.float32)
    t = np.asarray(counterparts, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    n = len(labels)
    if x.ndim != 2 or t.shape != x.shape or labels.shape != (len(x),):
        raise InvalidInputError(f"image embeddings {x.shape}, counterparts {t.shape} and labels {labels.shape} "
                                "must describe the same samples (n × d, n × d, n).")
    if (labels < -1).any():
        raise InvalidInputError("labels must be cluster ids ≥ 0, or −1 for no cluster.")
    masks = []
    for name, mask in (("verified", verified), ("excluded", excluded)):
        mask = np.zeros(n, bool) if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise InvalidInputError(f"{name} must have one entry per image ({n}); got shape {mask.shape}.")
        masks.append(mask)
    verified, excluded = masks
    closed = np.array(sorted({int(c) for c in (verified_clusters or ())}), dtype=np.int64)
    current = np.where(excluded, -1, labels)
    fixed = ~excluded & (verified | (np.isin(current, closed) & (current >= 0)))
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    features = np.concatenate([x, t], axis=1) / np.float32(np.sqrt(2))  # unit rows, as TAC's [x, t]
    return x, t, features, labels, current, fixed, excluded, closed


def recluster(image_embeddings, counterparts, labels, *, verified=None, verified_clusters: Iterable[int] = (),
              excluded=None, mode: str = "free", heads: Optional[dict] = None, max_iter: int = 100,
              epochs: int | str = "auto", batch_size: int | str = "auto", lr: float | str = "auto",
              temperature: float | str = "auto", entropy_weight: float = 5.0, balance: str = "estimated",
              n_neighbors: int = 50,
              anchor_weight: float = ANCHOR_WEIGHT, min_steps: int | str = "auto",
              random_state: Optional[int] = None, device: str = "cpu", progress: Optional[ProgressFn] = None,
              cancel: Optional[CancelToken] = None) -> ReclusterResult:
    """Re-assign every image that no decision fixes; see the module docstring for the rules.

    ``labels`` are the current ids after the reviewer's edits; ``verified`` (n booleans) the images they
    confirmed; ``verified_clusters`` the ids of confirmed clusters; ``excluded`` (n booleans) images that keep
    no cluster. ``heads`` are ``TAC.heads_`` for trained mode. Trained-mode options mirror :class:`TAC`;
    ``"auto"`` for ``lr`` / ``epochs`` / ``min_steps`` means :data:`FINE_TUNE` with heads, :data:`FRESH` without.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}; got {mode!r}.")
    check_balance(balance)
    x, t, features, labels, current, fixed, excluded, closed = _prepare(
        image_embeddings, counterparts, labels, verified, verified_clusters, excluded)
    active = np.unique(current[current >= 0])
    open_ids = np.setdiff1d(active, closed)
    movable = ~excluded & ~fixed
    if device == "auto":
        device = resolve_device(device)
    with flush_denormals():
        if len(open_ids) == 0 or not movable.any():
            new, conf, p_ids, q_ids = current.copy(), np.where(excluded, 0.0, 1.0), None, None
        elif mode == "free":
            new, conf = _free(features, current, fixed, movable, active, open_ids, max_iter, device, progress,
                              cancel)
            p_ids = q_ids = None
        else:
            new, conf, p_ids, q_ids = _trained(
                x, t, current, fixed, movable, active, open_ids, heads, dict(
                    epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature,
                    entropy_weight=entropy_weight, random_state=random_state, device=device, progress=progress,
                    cancel=cancel, anchor_weight=anchor_weight, min_steps=min_steps), n_neighbors, device,
                balance)
    new = np.where(movable, new, current)  # the guarantees, whatever happened above: decisions stay,
    new = np.where(movable & np.isin(new, closed), current, new)  # closed clusters take no one in,
    new[excluded] = -1  # excluded images stay out
    conf = np.where(fixed, 1.0, np.where(new < 0, 0.0, conf)).astype(np.float32)
    changed = ~excluded & (new != labels)
    transitions = Counter(zip(labels[changed].tolist(), new[changed].tolist()))
    vanished = sorted(set(active.tolist()) - set(np.unique(new[new >= 0]).tolist()))
    return ReclusterResult(new, conf, fixed, int(changed.sum()), dict(transitions), vanished, p_ids, q_ids, mode)


def recluster_tac(model, image_embeddings, labels, **kwargs) -> ReclusterResult:
    """:func:`recluster` for a fitted :class:`~tac_core.cluster.tac.TAC`: its counterparts, mode, heads and options."""
    k = int(model.n_clusters)
    options = dict(mode=model.mode, heads=getattr(model, "heads_", None), entropy_weight=model.entropy_weight,
                   balance=getattr(model, "balance", "uniform"),  # models fitted before balance existed
                   n_neighbors=model.n_neighbors, device=model.device, random_state=model.random_state,
                   batch_size=(8192 if k >= 100 else 512) if model.batch_size == "auto" else model.batch_size,
                   temperature=(5.0 if k >= 100 else 0.5) if model.temperature == "auto" else model.temperature)
    options.update(kwargs)
    return recluster(image_embeddings, model.counterparts_, labels, **options)


def _free(features, current, fixed, movable, active, open_ids, max_iter, device, progress, cancel):
    """Constrained spherical k-means; returns labels and p(label) (softmax over live open centres)."""
    f = torch.as_tensor(features, device=device)
    n_ids = int(active.max()) + 1
    labels = current.copy()
    centers = _unit_means(f, labels, n_ids)
    allowed = np.zeros(n_ids, bool)
    allowed[open_ids] = True
    idx = np.flatnonzero(movable)
    conf = np.zeros(len(labels), np.float32)
    for step in range(1, max_iter + 1):
        check_cancel(cancel)
        live = torch.as_tensor(allowed & (centers.norm(dim=1).cpu().numpy() > 0), device=device)
        changed = 0
        for start in range(0, len(idx), CHUNK_ROWS):
            rows = idx[start:start + CHUNK_ROWS]
            sims = (f[rows] @ centers.T).masked_fill(~live, -torch.inf)
            prob = torch.softmax(sims / CONFIDENCE_TEMPERATURE, dim=1)
            best = prob.argmax(dim=1)
            conf[rows] = prob.gather(1, best[:, None])[:, 0].cpu().numpy()
            best = best.cpu().numpy()
            changed += int((labels[rows] != best).sum())
            labels[rows] = best
        report(progress, "re-clustering", step, max_iter)
        if changed == 0:
            break
        centers = _unit_means(f, labels, n_ids)
    return labels, conf


def _unit_means(f: torch.Tensor, labels: np.ndarray, n_ids: int) -> torch.Tensor:
    """(n_ids, 2d) normalised mean of each cluster's rows (label −1 skipped), summed in float64 row chunks."""
    sums = torch.zeros((n_ids, f.shape[1]), dtype=torch.float64, device=f.device)
    for start in range(0, len(labels), CHUNK_ROWS):
        lab = torch.as_tensor(labels[start:start + CHUNK_ROWS], device=f.device)
        keep = lab >= 0
        sums.index_add_(0, lab[keep], f[start:start + CHUNK_ROWS][keep].double())
    return torch.nn.functional.normalize(sums, dim=1).float()


def _column_map(cols: np.ndarray, current: np.ndarray, fixed: np.ndarray, active: np.ndarray, n_cols: int):
    """Name head columns after clusters: one-to-one by overlap (Hungarian), extra columns to their majority
    cluster, empty columns to −1. Returns (column → id, overlap matrix)."""
    members = current >= 0
    pos = np.searchsorted(active, current[members])
    weight = np.where(fixed[members], FIXED_OVERLAP_WEIGHT, 1.0)
    overlap = np.zeros((n_cols, len(active)))
    np.add.at(overlap, (cols[members], pos), weight)
    col_to_id = np.full(n_cols, -1, np.int64)
    rows, ids = linear_sum_assignment(overlap, maximize=True)
    keep = overlap[rows, ids] > 0
    col_to_id[rows[keep]] = active[ids[keep]]
    rest = (col_to_id < 0) & (overlap.sum(axis=1) > 0)
    col_to_id[rest] = active[overlap[rest].argmax(axis=1)]
    return col_to_id, overlap


def _group(p: np.ndarray, col_to_id: np.ndarray, n_ids: int) -> np.ndarray:
    """(n, n_ids) probability per cluster id: the sum of its columns, renormalised over named columns."""
    out = np.zeros((len(p), n_ids), np.float32)
    named = col_to_id >= 0
    np.add.at(out.T, col_to_id[named], p[:, named].T)
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


def _column_prior(current: np.ndarray, col_to_id: np.ndarray) -> Optional[np.ndarray]:
    """Each head column's share of the current clusters' sizes (a cluster's share split evenly over its
    columns, unnamed columns nothing), or None when the sizes are even enough for the entropy bonus."""
    ids, sizes = np.unique(current[current >= 0], return_counts=True)
    if len(ids) < 2 or not uneven(sizes / sizes.sum()):
        return None
    share = dict(zip(ids.tolist(), (sizes / sizes.sum()).tolist()))
    columns = Counter(col_to_id.tolist())
    return np.array([share.get(c, 0.0) / columns[c] if c >= 0 else 0.0 for c in col_to_id.tolist()])


def _trained(x, t, current, fixed, movable, active, open_ids, heads, options, n_neighbors, device, balance):
    n = len(x)
    n_ids = int(active.max()) + 1
    k = min(n_neighbors, n - 1)
    image_nbrs, _ = cosine_knn(x, k, device=device)
    text_nbrs, _ = cosine_knn(t, k, device=device)
    if heads is not None:
        state = {side: {name: v.clone() for name, v in heads[side].items()} for side in ("image", "text")}
        n_cols = state["image"]["net.3.weight"].shape[0]
        cols = head_probabilities(state, x, "image", device).argmax(axis=1)
        col_to_id, overlap = _column_map(cols, current, fixed, active, n_cols)
        missing = [j for j, c in enumerate(active) if c not in set(col_to_id.tolist())]
        for j in missing:  # a cluster the head never saw: start from its members' majority column
            parent = int(overlap[:, j].argmax())
            for side in ("image", "text"):
                for name in ("net.3.weight", "net.3.bias"):
                    state[side][name] = torch.cat([state[side][name], state[side][name][parent:parent + 1]])
            col_to_id = np.append(col_to_id, active[j])
        n_cols = len(col_to_id)
    else:
        state, n_cols, col_to_id = None, len(active), active.copy()
    for key, value in (FINE_TUNE if heads is not None else FRESH).items():
        options[key] = value if options[key] == "auto" else options[key]
    anchors = np.flatnonzero(fixed & (current >= 0))
    targets = (col_to_id[None, :] == current[anchors][:, None]).astype(np.float32)
    batch = options.pop("batch_size")
    temperature = options.pop("temperature")
    batch = (8192 if n_cols >= 100 else 512) if batch == "auto" else int(batch)
    temperature = (5.0 if n_cols >= 100 else 0.5) if temperature == "auto" else float(temperature)
    size_prior = _column_prior(current, col_to_id) if balance == "estimated" else None
    if size_prior is not None and state is None:  # as TAC does: start fresh heads at the current clusters
        members = current >= 0
        state = warm_start_heads(x[members], t[members], np.searchsorted(active, current[members]), n_cols,
                                 batch_size=batch, lr=options["lr"], random_state=options["random_state"],
                                 device=device, cancel=options["cancel"])
    result = fit_heads(x, t, n_cols, image_nbrs, text_nbrs, batch_size=batch, temperature=temperature,
                       size_prior=size_prior,
                       initial_state=state, anchor_indices=anchors if len(anchors) else None,
                       anchor_targets=targets, **options)
    if heads is None:  # fresh columns are arbitrary until named by what they hold
        col_to_id, _ = _column_map(result.probabilities.argmax(axis=1), current, fixed, active, n_cols)
    p_ids = _group(result.probabilities, col_to_id, n_ids)
    q_ids = _group(result.text_probabilities, col_to_id, n_ids)
    allowed = np.full(n_ids, -np.inf, np.float32)
    allowed[open_ids] = 0
    choice = (np.log(np.maximum(p_ids, 1e-30)) + allowed).argmax(axis=1)
    conf = p_ids[np.arange(n), choice]
    return np.where(movable, choice, current), conf, p_ids, q_ids
