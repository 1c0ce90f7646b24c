"""A plain column-aligned table for the benches that print one (``bench.distributed``, ``bench.gpu_decode``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence


def print_columns(header: str, titles: Sequence[str], cells: list[Sequence[str]], rows: list[dict],
                  json_path: Optional[Path]) -> None:
    """``header``, then ``titles`` over ``cells`` in left-aligned columns; the raw ``rows`` to ``json_path``."""
    widths = [max(len(t), *(len(c[i]) for c in cells)) for i, t in enumerate(titles)]
    print(header + "\n")
    for line in [titles, tuple("-" * w for w in widths), *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    if json_path:
        json_path.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
