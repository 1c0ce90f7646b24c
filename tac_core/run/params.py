"""What a run of a workspace is asked to compute: its parameters as stored in its row, and the names of what
it leaves in its folder."""
from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

MODES = ("free", "trained")
DEVICES = ("auto", "cuda", "mps", "cpu")
PROJECTIONS = ("umap", "pca")
STAGES = {"free": ("embedding images", "embedding vocabulary", "selecting nouns", "clustering", "projection",
                   "suggesting K"),
          "trained": ("embedding images", "embedding vocabulary", "selecting nouns", "finding neighbours", "training",
                      "projection", "suggesting K")}
MAP_FOLDER = "map"  # inside a run's folder: its fitted map (tac_core.run.run_map places later images on it)
TEXT_SPACE_ARRAY = "text_space"  # the run array holding the text rows counterparts are mixed from


def make_params(*, model: dict, vocab_set: str, vocab_spec: dict, n_clusters: int, mode: str = "free",
                seed: int = 0, device: str = "auto", epochs: int = 20, batch_size: int = 64,
                projection: str = "umap", suggest_k: bool = True) -> dict:
    """Every parameter of a run as stored in its row (the vocabulary spec is copied, so later edits of the set
    never change what a run used)."""
    return validate_params({"model": model, "vocab_set": vocab_set, "vocab_spec": vocab_spec,
                            "n_clusters": n_clusters, "mode": mode, "seed": seed, "device": device,
                            "epochs": epochs, "batch_size": batch_size, "projection": projection,
                            "suggest_k": suggest_k})


def run_model_spec(params: dict):
    """The :class:`~tac_core.embedding.models.ModelSpec` of a run's ``params["model"]`` (default weights: openai)."""
    from ..embedding.models import ModelSpec

    model = params.get("model") or {}
    return ModelSpec(model.get("name", ""), model.get("pretrained") or "openai", model.get("checkpoint") or None)


def validate_params(params: dict) -> dict:
    from ..inputs.vocab_spec import validate_spec

    out = dict(params)
    spec = run_model_spec(out)
    out["model"] = {"name": spec.name, "pretrained": spec.pretrained, "checkpoint": spec.checkpoint}
    out["vocab_spec"] = validate_spec(out.get("vocab_spec"))
    for key, low in (("n_clusters", 2), ("seed", 0), ("epochs", 1), ("batch_size", 1)):
        value = out.get(key)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{key} must be a whole number of at least {low}; got {value!r}.")
        out[key] = int(value)
    for key, allowed in (("mode", MODES), ("device", DEVICES), ("projection", PROJECTIONS)):
        if out.get(key) not in allowed:
            raise InvalidInputError(f"{key} must be one of {', '.join(allowed)}; got {out.get(key)!r}.")
    out["suggest_k"] = bool(out.get("suggest_k", True))
    out["vocab_set"] = str(out.get("vocab_set") or "")
    return out
