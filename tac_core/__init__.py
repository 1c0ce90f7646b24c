"""TAC Studio's engine: Text-Aided Clustering of image collections, free of any UI.

The names a script or a notebook needs are importable from here::

    import tac_core
    model = tac_core.TAC(n_clusters=10).fit(image_embeddings, vocab_embeddings)
    run = tac_core.cluster_image_folder("photos/", tac_core.Vocabulary.wordnet(),
                                        tac_core.RunParams(n_clusters=6, model=tac_core.ModelSpec("ViT-B-32")))

They load lazily (``import tac_core`` does not import torch or open_clip), so the command line can check its
arguments before the heavy libraries load. Everything else lives in the layer packages: ``cluster`` (TAC and
the maths on arrays), ``inputs`` (image files, vocabulary), ``embedding`` (models, encoders, cache),
``workspace`` (the project database, review, export) and ``run`` (run description, pipeline, jobs, CLI).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    # errors a user can cause
    "TacError": "tac_core.errors",
    "InvalidInputError": "tac_core.errors",
    "EmptyInputError": "tac_core.errors",
    "WeightsUnavailableError": "tac_core.errors",
    # clustering on arrays
    "TAC": "tac_core.cluster.tac",
    "suggest_k": "tac_core.cluster.suggest_k",
    "audit": "tac_core.cluster.audit",
    "clustering_accuracy": "tac_core.cluster.metrics",
    "evaluate": "tac_core.cluster.metrics",
    # inputs and embeddings
    "ImageSet": "tac_core.inputs.imageset",
    "scan_folder": "tac_core.inputs.imageset",
    "Vocabulary": "tac_core.inputs.vocabulary",
    "ModelSpec": "tac_core.embedding.models",
    "embed_images": "tac_core.embedding.embed",
    "embed_vocabulary": "tac_core.embedding.embed",
    # workspaces and review
    "Workspace": "tac_core.workspace.workspace",
    "create_workspace": "tac_core.workspace.workspace",
    "open_workspace": "tac_core.workspace.workspace",
    "ReviewSession": "tac_core.workspace.review",
    "export_labels": "tac_core.workspace.export",
    # who uses a workspace and what they may do
    "User": "tac_core.workspace.access",
    "Role": "tac_core.workspace.access",
    "AccessDeniedError": "tac_core.workspace.access",
    # a whole run: its description and the pipeline the CLI and the app's jobs share
    "RunParams": "tac_core.run.params",
    "ImageFiles": "tac_core.run.pipeline",
    "TextEmbeddings": "tac_core.run.pipeline",
    "compute_run": "tac_core.run.pipeline",
    "cluster_image_folder": "tac_core.run.pipeline",
}
__all__ = ["__version__", "TacError", "InvalidInputError", "EmptyInputError", "WeightsUnavailableError", "TAC",
           "suggest_k", "audit", "clustering_accuracy", "evaluate", "ImageSet", "scan_folder", "Vocabulary",
           "ModelSpec", "embed_images", "embed_vocabulary", "Workspace", "create_workspace", "open_workspace",
           "ReviewSession", "export_labels", "User", "Role", "AccessDeniedError", "RunParams", "ImageFiles", "TextEmbeddings", "compute_run",
           "cluster_image_folder"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from .cluster.audit import audit
    from .cluster.metrics import clustering_accuracy, evaluate
    from .cluster.suggest_k import suggest_k
    from .cluster.tac import TAC
    from .embedding.embed import embed_images, embed_vocabulary
    from .embedding.models import ModelSpec
    from .errors import EmptyInputError, InvalidInputError, TacError, WeightsUnavailableError
    from .inputs.imageset import ImageSet, scan_folder
    from .inputs.vocabulary import Vocabulary
    from .run.params import RunParams
    from .run.pipeline import ImageFiles, TextEmbeddings, cluster_image_folder, compute_run
    from .workspace.access import AccessDeniedError, Role, User
    from .workspace.export import export_labels
    from .workspace.review import ReviewSession
    from .workspace.workspace import Workspace, create_workspace, open_workspace


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tac_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
