"""What earlier runs of a workspace tell the next one: the newest K suggestion. (How fast a model encodes a
vocabulary is recorded in the embedding cache itself: :func:`tac_core.embedding.embed.expected_encoding_rate`.)"""
from __future__ import annotations

from typing import Optional

from ..workspace.workspace import Workspace
from .jobs import read_summary


def latest_k_suggestion(workspace: Workspace) -> Optional[tuple[int, dict]]:
    """(run id, its ``k_suggestion``) of the newest finished run that computed one, or None."""
    runs = workspace.runs()
    for run_id in runs.loc[runs["status"] == "done", "id"]:
        suggestion = read_summary(workspace, int(run_id)).get("k_suggestion")
        if suggestion:
            return int(run_id), suggestion
    return None
