"""Prompt templates that turn a noun into the sentences CLIP's text encoder embeds.

A noun's embedding is the normalised mean over its templates (ARCHITECTURE.md), so the set of templates is
part of what a cached vocabulary embedding depends on. Encoding cost grows linearly with the number of
templates: 82k WordNet names × 7 templates is ~575k sentences, hence the shorter sets for quick runs.
"""
from __future__ import annotations

from typing import Iterable

from ..errors import InvalidInputError

#: The 7 templates of the TAC paper (Li et al., ICML 2024), as published (including "a origami").
TAC_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

#: Named sets. ``tac7``: the paper's, best quality. ``tac3``: three of the seven (a plain photo, a degraded
#: photo, a non-photographic rendering), ~2.3× faster to encode. ``photo1``: CLIP's single default prompt,
#: 7× faster, for previews.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "tac7": TAC_TEMPLATES,
    "tac3": ("itap of a {}.", "a bad photo of the {}.", "art of the {}."),
    "photo1": ("a photo of a {}.",),
}

DEFAULT_TEMPLATE_SET = "tac7"


def template_set(name_or_templates: str | Iterable[str]) -> tuple[str, ...]:
    """Resolve a set name (see :data:`TEMPLATE_SETS`) or validate a user's own list of templates.

    Every template must hold exactly one ``{}`` (where the noun goes) and no other braces, so that
    ``template.format(noun)`` can neither fail nor drop the noun.
    """
    if isinstance(name_or_templates, str):
        try:
            return TEMPLATE_SETS[name_or_templates]
        except KeyError:
            known = ", ".join(TEMPLATE_SETS)
            raise InvalidInputError(
                f"Unknown prompt template set {name_or_templates!r}; known sets: {known}."
            ) from None
    templates = tuple(name_or_templates)
    if not templates:
        raise InvalidInputError("The list of prompt templates is empty; give at least one, "
                                "e.g. 'a photo of a {}.'.")
    for template in templates:
        if not isinstance(template, str) or "{}" not in template or template.count("{") + template.count("}") != 2:
            raise InvalidInputError(
                f"Prompt template {template!r} must contain exactly one '{{}}' where the noun goes, "
                "and no other braces."
            )
    return templates
