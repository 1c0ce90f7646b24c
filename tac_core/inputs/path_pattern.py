"""Metadata read from file paths with a pattern the user writes, e.g. ``{line}/{camera}/{date}_{serial}.png``.

Plants name folders and files after where a picture comes from; a pattern says which part is which.

- ``{name}`` is a field: one or more characters of one path part (never a ``/``), the fewest that let the
  rest match, so ``{date}_{serial}`` splits ``2024-06-01_0042`` at the first ``_``. Names are letters, digits
  and ``_``, starting with a letter or ``_``; each name once.
- ``*`` is any text within one path part that is not kept (``{line}/*/{serial}.png``).
- Everything else must be there as written; letters match in either case (``.PNG`` and ``.png``).
- The pattern matches the *end* of a path, starting at a folder boundary: ``{camera}/{file}.png`` reads
  ``line3/cam1/x.png`` as camera ``cam1``. Back-slashes count as ``/``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ..errors import InvalidInputError

FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_PATTERN_LENGTH = 500


@dataclass(frozen=True)
class PathPattern:
    """A parsed pattern: its text, its field names in order, and the expression that reads them."""

    text: str
    fields: tuple[str, ...]
    regex: re.Pattern

    @classmethod
    def parse(cls, text: object) -> "PathPattern":
        """The pattern, or :class:`InvalidInputError` saying what is wrong with it and how to write it."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("the path pattern is empty; write one such as {line}/{camera}/{date}_{serial}.png.")
        pattern = text.strip().replace("\\", "/").lstrip("/")
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise InvalidInputError(f"the path pattern is {len(pattern)} characters long; use at most "
                                    f"{MAX_PATTERN_LENGTH}.")
        parts, fields, i = [], [], 0
        while i < len(pattern):
            char = pattern[i]
            if char == "{":
                end = pattern.find("}", i)
                if end < 0:
                    raise InvalidInputError(f"the path pattern {pattern!r} opens a field with '{{' at character "
                                            f"{i + 1} but never closes it with '}}'.")
                name = pattern[i + 1:end].strip()
                if not FIELD_NAME.fullmatch(name):
                    raise InvalidInputError(f"{{{name}}} in the path pattern is not a usable field name: use letters, "
                                            "digits and _ (starting with a letter), e.g. {line}.")
                if name in fields:
                    raise InvalidInputError(f"the path pattern names the field {{{name}}} twice; give each field once.")
                fields.append(name)
                parts.append(f"(?P<{name}>[^/]+?)")
                i = end + 1
                continue
            if char == "}":
                raise InvalidInputError(f"the path pattern {pattern!r} has a '}}' at character {i + 1} that closes no "
                                        "field.")
            parts.append("[^/]*?" if char == "*" else re.escape(char))
            i += 1
        if not fields:
            raise InvalidInputError(f"the path pattern {pattern!r} names no field; put each part to keep in braces, "
                                    "e.g. {line}/{camera}/*.png.")
        return cls(pattern, tuple(fields), re.compile("(?:^|/)" + "".join(parts) + "$", re.IGNORECASE))

    def match(self, path: str) -> Optional[dict[str, str]]:
        """The fields read from ``path`` (by name), or None when the pattern does not fit it."""
        found = self.regex.search(path.replace("\\", "/"))
        return None if found is None else {name: found.group(name) for name in self.fields}
