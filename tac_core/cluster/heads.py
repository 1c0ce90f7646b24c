"""Trained TAC: two cluster heads taught by cross-modal mutual distillation.

One head reads image embeddings, the other the text counterparts. Each learns from the *other* modality's
view of a neighbour (so the image head is taught by what the text side says about similar images and vice
versa), both are pushed to agree on every sample, and an entropy bonus keeps clusters from collapsing into
one. The losses follow TAC_METHOD.md step 3b exactly, except where a ``size_prior`` is given: then the bonus
becomes a penalty on the distance from an estimated size profile (:func:`size_profile_divergence`), so that a
set with one big class and rare ones is not pushed into equal clusters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..numerics import single_cpu_thread
from ..progress import CancelToken, ProgressFn, check_cancel, report

EPS = 1e-8
MIN_STEPS = 600  # small collections get extra passes per epoch: 20 epochs of 300 images is only 20 steps
WARM_START_STEPS = 200  # 200 × 512 samples: the heads reproduce a given partition (3,000 images: ~99 %)


class ClusterHead(nn.Module):
    """Linear(d, d) → BatchNorm → ReLU → Linear(d, K) → softmax: one cluster distribution per sample."""

    def __init__(self, dim: int, n_clusters: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, n_clusters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def cluster_contrastive_loss(p: torch.Tensor, q: torch.Tensor, temperature: float) -> torch.Tensor:
    """Columns (one batch-long vector per cluster) are the items: column k of ``p`` is positive with
    column k of ``q`` and negative with all other 2K-2 columns; cross-entropy averaged over 2K columns."""
    k = p.shape[1]
    cols = nn.functional.normalize(torch.cat([p.T, q.T]), dim=1)
    sim = cols @ cols.T / temperature
    sim = sim.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(k, 2 * k), torch.arange(0, k)]).to(sim.device)
    return nn.functional.cross_entropy(sim, target)


def anchor_loss(p: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of labelled anchors: -log of the probability the head puts on the anchor's columns.

    ``allowed`` (anchors × K, 0/1) marks the columns that stand for the anchor's cluster (usually one; more
    when the reviewer merged clusters that the head still keeps apart).
    """
    return -torch.log((p * allowed).sum(dim=1).clamp_min(EPS)).mean()


def consistency_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy pushing the agreement p_i · q_i of the two heads towards 1."""
    return -torch.log((p * q).sum(dim=1).clamp_min(EPS)).mean()


def batch_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of the batch-mean cluster distribution: high when the batch spreads over clusters."""
    mean = p.mean(dim=0)
    return -(mean * torch.log(mean.clamp_min(EPS))).sum()


def size_profile_divergence(p: torch.Tensor, sorted_prior: torch.Tensor) -> torch.Tensor:
    """KL(m ‖ π) from the batch-mean distribution m to the closest relabelling of the size profile π.

    ``sorted_prior`` is π sorted in descending order. Pairing the largest column of m with the largest share
    of π, and so on, gives the relabelling of π with the smallest KL (rearrangement inequality), so the loss
    says how big the clusters are, never which column must be big. With π uniform it equals
    −:func:`batch_entropy` + log K: the paper's balance term.
    """
    mean = p.mean(dim=0)
    ordered = torch.sort(mean, descending=True).values
    return (ordered * (torch.log(ordered.clamp_min(EPS)) - torch.log(sorted_prior))).sum()


def _batch_stream(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of distinct indices: consecutive slices of fresh permutations (a short tail is dropped)."""
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


@dataclass
class TrainedHeads:
    probabilities: np.ndarray  # (n, K) image head
    text_probabilities: np.ndarray  # (n, K) text head
    state: dict  # {"image": state_dict, "text": state_dict}, CPU tensors: reload with ClusterHead + load_state_dict


def head_probabilities(state: dict, features: np.ndarray, which: str = "image",
                       device: str | torch.device = "cpu") -> np.ndarray:
    """Evaluate one saved head (``state[which]``) on ``features``, in chunks."""
    weights = state[which]
    dim, k = weights["net.0.weight"].shape[1], weights["net.3.weight"].shape[0]
    head = ClusterHead(dim, k).to(device)
    head.load_state_dict(weights)
    head.eval()
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    with torch.no_grad(), single_cpu_thread(device):
        return torch.cat([head(x[s:s + 8192]) for s in range(0, len(x), 8192)]).cpu().numpy()


def warm_start_heads(image_embeddings: np.ndarray, counterparts: np.ndarray, labels: np.ndarray,
                     n_clusters: int, steps: int = WARM_START_STEPS, batch_size: int = 512, lr: float = 1e-3,
                     random_state: Optional[int] = None, device: str | torch.device = "cpu",
                     cancel: Optional[CancelToken] = None) -> dict:
    """Heads initialised as :func:`fit_heads` would, then taught ``labels`` (cross-entropy, both heads).

    Returns their state for ``fit_heads(initial_state=...)``: training then starts from this partition,
    column k standing for cluster k, instead of from random heads. Needed with a ``size_prior``: random heads
    aimed at a 90/5/5 profile collapse into one column, because KL(m ‖ π) charges only log(1/0.9) for it.
    """
    seed = 0 if random_state is None else int(random_state)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dim = image_embeddings.shape[1]
        heads = {"image": ClusterHead(dim, n_clusters).to(device), "text": ClusterHead(dim, n_clusters).to(device)}
    x = torch.as_tensor(image_embeddings, dtype=torch.float32, device=device)
    t = torch.as_tensor(counterparts, dtype=torch.float32, device=device)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    optimizer = torch.optim.Adam(list(heads["image"].parameters()) + list(heads["text"].parameters()), lr=lr)
    batches = _batch_stream(len(x), max(2, min(batch_size, len(x))), gen)
    with single_cpu_thread(device):
        for _ in range(steps):
            check_cancel(cancel)
            idx = next(batches).to(device)
            loss = sum(nn.functional.nll_loss(torch.log(head(inputs[idx]).clamp_min(EPS)), y[idx])
                       for head, inputs in ((heads["image"], x), (heads["text"], t)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return {side: {name: v.detach().cpu().clone() for name, v in head.state_dict().items()}
            for side, head in heads.items()}


def train_heads(*args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Train both heads (see :func:`fit_heads`); return the image and text heads' probabilities."""
    result = fit_heads(*args, **kwargs)
    return result.probabilities, result.text_probabilities


def fit_heads(
    image_embeddings: np.ndarray,
    counterparts: np.ndarray,
    n_clusters: int,
    image_neighbors: np.ndarray,
    text_neighbors: np.ndarray,
    epochs: int = 20,
    batch_size: int = 512,
    lr: float = 1e-3,
    temperature: float = 0.5,
    entropy_weight: float = 5.0,
    random_state: Optional[int] = None,
    device: str | torch.device = "cpu",
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
    initial_state: Optional[dict] = None,
    anchor_indices: Optional[np.ndarray] = None,
    anchor_targets: Optional[np.ndarray] = None,
    anchor_weight: float = 1.0,
    min_steps: int = MIN_STEPS,
    size_prior: Optional[np.ndarray] = None,
) -> TrainedHeads:
    """Train both heads and return their probabilities for every sample and their weights.

    An epoch is one pass over the data, but never fewer than ``min_steps / epochs`` steps, so a few hundred
    images get as much optimisation as the heads need instead of a handful of steps.

    Fine-tuning (re-clustering with a reviewer's decisions): ``initial_state`` starts both heads from saved
    weights; ``anchor_indices`` are labelled samples and ``anchor_targets`` (anchors × K, 0/1) their allowed
    columns. Every step adds ``anchor_weight`` × :func:`anchor_loss` for both heads on a batch of anchors
    (all of them, or ``max(32, batch_size // 4)`` drawn at random) next to TAC's own losses; the anchors
    ride in the same forward pass as the batch, so BatchNorm sees one batch.

    ``size_prior`` (K shares summing to 1): replace the entropy bonus by ``entropy_weight`` ×
    :func:`size_profile_divergence` to that profile, for both heads. ``None`` is the paper's uniform target.
    """
    seed = 0 if random_state is None else int(random_state)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dim = image_embeddings.shape[1]
        image_head = ClusterHead(dim, n_clusters).to(device)
        text_head = ClusterHead(dim, n_clusters).to(device)
    if initial_state is not None:
        image_head.load_state_dict(initial_state["image"])
        text_head.load_state_dict(initial_state["text"])
    x = torch.as_tensor(image_embeddings, dtype=torch.float32, device=device)
    t = torch.as_tensor(counterparts, dtype=torch.float32, device=device)
    img_nbrs = torch.as_tensor(image_neighbors, dtype=torch.long)
    txt_nbrs = torch.as_tensor(text_neighbors, dtype=torch.long)
    n_anchors = 0 if anchor_indices is None else len(anchor_indices)
    if n_anchors:
        anchors = torch.as_tensor(np.asarray(anchor_indices), dtype=torch.long)
        allowed = torch.as_tensor(np.asarray(anchor_targets), dtype=torch.float32, device=device)
        anchor_batch = min(n_anchors, max(32, batch_size // 4))
    if size_prior is not None:
        prior = np.sort(np.clip(np.asarray(size_prior, dtype=np.float64), EPS, None))[::-1]
        sorted_prior = torch.as_tensor(prior / prior.sum(), dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam(list(image_head.parameters()) + list(text_head.parameters()), lr=lr)
    n = x.shape[0]
    batch_size = max(2, min(batch_size, n))
    steps_per_epoch = max(n // batch_size, -(-min_steps // max(1, epochs)))
    batches = _batch_stream(n, batch_size, gen)
    with single_cpu_thread(device):
        for epoch in range(epochs):
            image_head.train()
            text_head.train()
            for _ in range(steps_per_epoch):
                check_cancel(cancel)
                idx = next(batches)
                j = img_nbrs[idx, torch.randint(0, img_nbrs.shape[1], (len(idx),), generator=gen)]
                k = txt_nbrs[idx, torch.randint(0, txt_nbrs.shape[1], (len(idx),), generator=gen)]
                b = len(idx)
                if n_anchors:
                    pick = (torch.arange(n_anchors) if anchor_batch == n_anchors
                            else torch.randperm(n_anchors, generator=gen)[:anchor_batch])
                    idx = torch.cat([idx, anchors[pick]])
                idx, j, k = idx.to(device), j.to(device), k.to(device)
                p_all, q_all = image_head(x[idx]), text_head(t[idx])
                p, q = p_all[:b], q_all[:b]
                p_nbr, q_nbr = image_head(x[j]), text_head(t[k])
                loss = (cluster_contrastive_loss(p, q_nbr, temperature)
                        + cluster_contrastive_loss(q, p_nbr, temperature)
                        + consistency_loss(p, q))
                if size_prior is None:
                    loss = loss - entropy_weight * (batch_entropy(p) + batch_entropy(q))
                else:
                    loss = loss + entropy_weight * (size_profile_divergence(p, sorted_prior)
                                                    + size_profile_divergence(q, sorted_prior))
                if n_anchors:
                    target = allowed[pick.to(device)]
                    loss = loss + anchor_weight * (anchor_loss(p_all[b:], target) + anchor_loss(q_all[b:], target))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            report(progress, "training", epoch + 1, epochs)
        image_head.eval()
        text_head.eval()
        with torch.no_grad():
            p_all = torch.cat([image_head(x[s:s + 8192]) for s in range(0, n, 8192)])
            q_all = torch.cat([text_head(t[s:s + 8192]) for s in range(0, n, 8192)])
    state = {"image": {name: v.detach().cpu().clone() for name, v in image_head.state_dict().items()},
             "text": {name: v.detach().cpu().clone() for name, v in text_head.state_dict().items()}}
    return TrainedHeads(p_all.cpu().numpy(), q_all.cpu().numpy(), state)
