"""What earlier runs of a workspace tell the next one: the newest K suggestion, and how fast a model encoded a
vocabulary's prompts (the newest run with the same model and template set, finished or still running)."""
from __future__ import annotations

from typing import Optional

from ..embedding.encoding_rate import EncodingRate, guessed_encoding_rate, observed_encoding_rate
from ..embedding.text_encoding import STAGE
from ..workspace.workspace import Workspace
from .jobs import read_stages, read_summary


def text_encoding_rate(workspace: Workspace, model: dict, templates: str, device: str) -> EncodingRate:
    """Prompts per second for ``model`` (as stored in run parameters) and ``templates``: observed in the newest
    run that encoded enough terms with both, else a rough guess for ``device``."""
    for run in workspace.runs().itertuples(index=False):
        params = run.params
        if params.get("model") != model or params.get("vocab_spec", {}).get("templates") != templates:
            continue
        for stage in read_stages(workspace, int(run.id)):
            if stage["stage"] == STAGE:
                rate = observed_encoding_rate(stage.get("done", 0) - stage.get("first_done", 0),
                                              stage.get("seconds", 0), templates, f"run {run.id}")
                if rate is not None:
                    return rate
    return guessed_encoding_rate(device)


def latest_k_suggestion(workspace: Workspace) -> Optional[tuple[int, dict]]:
    """(run id, its ``k_suggestion``) of the newest finished run that computed one, or None."""
    runs = workspace.runs()
    for run_id in runs.loc[runs["status"] == "done", "id"]:
        suggestion = read_summary(workspace, int(run_id)).get("k_suggestion")
        if suggestion:
            return int(run_id), suggestion
    return None
