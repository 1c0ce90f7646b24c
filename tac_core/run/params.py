"""What a run is asked to compute: :class:`RunParams`, the one description of a run that the Cluster page, the
job, the CLI and the benchmarks build and read; and the names of what a run leaves in its folder.

A workspace run's row (its ``params`` column) and the CLI's ``run.json`` (its ``"params"``) hold
:meth:`RunParams.to_dict`. :meth:`RunParams.from_dict` reads them back: a row stored before a field existed
gets the field's default, and keys that are no parameter (a re-cluster's ``"recluster"`` note, facts of older
``run.json`` files) are left out.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np

from ..cluster import BALANCES, MODES
from ..devices import DEVICES
from ..errors import InvalidInputError, ParameterError
from ..inputs.prompts import DEFAULT_TEMPLATE_SET, TEMPLATE_SETS

if TYPE_CHECKING:  # torch and open_clip load only once needed (the CLI reports bad numbers without them)
    from ..cluster.tac import TAC
    from ..embedding.models import ModelSpec
    from ..inputs.vocabulary import Vocabulary

PROJECTIONS = ("umap", "pca")
STAGES = {"free": ("embedding images", "embedding vocabulary", "selecting nouns", "clustering", "projection",
                   "suggesting K"),
          "trained": ("embedding images", "embedding vocabulary", "selecting nouns", "estimating sizes",
                      "finding neighbours", "training", "projection", "suggesting K")}  # sizes: balance "estimated"
_LOWEST = {"n_clusters": 2, "seed": 0, "epochs": 1, "batch_size": 1}  # whole-number parameters and their minimum


def model_to_dict(spec: Optional[ModelSpec]) -> Optional[dict]:
    """A model as run parameters store it: ``{"name", "pretrained", "checkpoint"}`` (None: no model)."""
    if spec is None:
        return None
    return {"name": spec.name, "pretrained": spec.pretrained, "checkpoint": spec.checkpoint}


def model_from_dict(model: Optional[Mapping | ModelSpec]) -> Optional[ModelSpec]:
    """The :class:`~tac_core.embedding.models.ModelSpec` a stored model dict names (missing weights tag: the
    default, openai; other keys, such as an older ``run.json``'s ``identity``, are ignored)."""
    if model is None:
        return None
    from ..embedding.models import DEFAULT_PRETRAINED, ModelSpec

    if isinstance(model, ModelSpec):
        return model
    if not isinstance(model, Mapping):
        raise InvalidInputError(f"a run's model must be given by name, weights tag and checkpoint; got {model!r}.")
    return ModelSpec(model.get("name", ""), model.get("pretrained") or DEFAULT_PRETRAINED,
                     model.get("checkpoint") or None)


@dataclass(frozen=True)
class RunParams:
    """Every parameter of a run, checked once when it is made (:class:`~tac_core.errors.ParameterError` naming
    the field, or the model's or vocabulary set's own error).

    ``model`` is a ``ModelSpec`` or its stored dict; None where the user brings embeddings (nothing is embedded).
    ``vocab_spec`` is a workspace's vocabulary set, copied so later edits of the set never change what a run
    used; None where the vocabulary comes from elsewhere (the CLI's files). ``templates`` is the prompt template
    set; None takes the vocabulary set's (or the default). ``projection`` None computes no 2-D map (the CLI).
    """

    n_clusters: int
    model: Optional[ModelSpec] = None
    vocab_set: str = ""
    vocab_spec: Optional[dict] = field(default=None, hash=False)
    mode: str = "free"
    seed: int = 0
    device: str = "auto"
    epochs: int = 20
    batch_size: int = 64
    projection: Optional[str] = "umap"
    suggest_k: bool = True
    include_domain_terms: bool = True
    templates: Optional[str] = None
    balance: str = "estimated"

    def __post_init__(self) -> None:
        for name, lowest in _LOWEST.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lowest:
                raise ParameterError(f"{name} must be a whole number of at least {lowest}; got {value!r}.", name,
                                     value, lowest)
            self._set(name, int(value))
        for name, allowed in (("mode", MODES), ("device", DEVICES), ("projection", PROJECTIONS), ("balance", BALANCES)):
            value = getattr(self, name)
            if value not in allowed and not (name == "projection" and value is None):
                raise ParameterError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.", name, value)
        self._set("suggest_k", bool(self.suggest_k))
        self._set("include_domain_terms", bool(self.include_domain_terms))
        self._set("vocab_set", str(self.vocab_set or ""))
        if self.vocab_spec is not None:
            from ..inputs.vocab_spec import validate_spec

            self._set("vocab_spec", validate_spec(self.vocab_spec))
        self._set("templates", self._chosen_templates())
        self._set("model", model_from_dict(self.model))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen instance while it is being made

    def _chosen_templates(self) -> str:
        of_set = None if self.vocab_spec is None else self.vocab_spec["templates"]
        if self.templates is None:
            return of_set or DEFAULT_TEMPLATE_SET
        if self.templates not in TEMPLATE_SETS:
            raise ParameterError(f"unknown prompt template set {self.templates!r}; choose one of "
                                 f"{', '.join(TEMPLATE_SETS)}.", "templates", self.templates)
        if of_set is not None and self.templates != of_set:
            raise ParameterError(f"the prompt template set {self.templates!r} differs from the vocabulary set's "
                                 f"{of_set!r}; give only one of them.", "templates", self.templates)
        return self.templates

    # -- stored form ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: what a run's row and ``run.json`` store."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["model"] = model_to_dict(self.model)
        out["vocab_spec"] = copy.deepcopy(self.vocab_spec)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunParams:
        """Parameters as :meth:`to_dict` stored them, by this version or an earlier one (see the module doc)."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"run parameters must be a JSON object, not {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        given = {key: value for key, value in data.items() if key in known}
        given.setdefault("n_clusters", None)  # refused with the message of a bad K, not a TypeError
        given.setdefault("balance", "uniform")  # what runs stored before the option existed computed
        return cls(**given)

    # -- what follows from them -----------------------------------------------------------------------------
    def require_model(self) -> ModelSpec:
        """The model, for computations that embed (a workspace run always does)."""
        if self.model is None:
            raise InvalidInputError("these run parameters name no model, so no image or term can be embedded; "
                                    "choose a model.")
        return self.model

    def vocabulary(self) -> Vocabulary:
        """The terms of the vocabulary set (``EmptyInputError`` when everything is switched off or filtered out)."""
        from ..inputs.vocab_spec import build_vocabulary

        if self.vocab_spec is None:
            raise InvalidInputError("these run parameters hold no vocabulary set; choose one on the Vocabulary page.")
        return build_vocabulary(self.vocab_spec)

    def estimator(self, device: Optional[str] = None, progress=None, cancel=None) -> TAC:
        """The unfitted :class:`~tac_core.cluster.tac.TAC` these parameters describe (``device``: resolved already)."""
        from ..cluster.tac import TAC

        return TAC(self.n_clusters, mode=self.mode, epochs=self.epochs, include_domain_terms=self.include_domain_terms,
                   balance=self.balance, device=device or self.device, random_state=self.seed, progress=progress,
                   cancel=cancel)
