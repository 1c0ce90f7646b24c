"""Prompt templates: the paper's seven, the named sets, and the checks on a user's own templates."""
from __future__ import annotations

import pytest

from tac_core.errors import InvalidInputError
from tac_core.inputs.prompts import TAC_TEMPLATES, TEMPLATE_SETS, template_set


def test_templates():
    assert len(TAC_TEMPLATES) == 7 and TAC_TEMPLATES[2] == "a origami {}."
    assert template_set("tac7") == TAC_TEMPLATES
    for templates in TEMPLATE_SETS.values():
        assert all(t.count("{}") == 1 for t in templates)
    assert template_set(["a photo of a {} on a belt."]) == ("a photo of a {} on a belt.",)
    with pytest.raises(InvalidInputError, match="'tac9'.*tac7, tac3, photo1"):
        template_set("tac9")
    for bad in (["no slot"], ["{} and {}"], ["a {name}"], []):
        with pytest.raises(InvalidInputError):
            template_set(bad)
