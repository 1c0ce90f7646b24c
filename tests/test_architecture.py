"""The package layout holds: each layer imports only the layers below it, the engine never imports Streamlit,
modules stay small, no module reaches into another's private names, and the public API loads lazily."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "tac_core"
BASE = {"errors", "progress", "atomic", "numerics", "devices"}
# what each layer may import besides the base modules (and itself)
ALLOWED = {
    "cluster": set(),
    "inputs": set(),
    "embedding": {"inputs"},
    "workspace": {"inputs", "cluster"},
    "run": {"inputs", "cluster", "embedding", "workspace"},
}
MAX_LINES = 400


def engine_modules() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py"))


def layer_of(path: Path) -> str:
    parts = path.relative_to(ENGINE).parts
    return parts[0] if len(parts) > 1 else "base"


def imported_modules(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in ``path``, relative ones resolved."""
    package = ".".join(("tac_core", *path.relative_to(ENGINE).parts[:-1]))
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for path in engine_modules():
        layer = layer_of(path)
        for module, _ in imported_modules(path):
            parts = module.split(".")
            if parts[0] != "tac_core" or len(parts) < 2 or parts[1] in BASE or parts[1] in ("__init__",):
                continue
            target = parts[1]
            if layer == "base" and path.name != "__init__.py" and path.name != "__main__.py":
                wrong.append(f"{path.relative_to(ROOT)} (base) imports {module}")
            elif layer in ALLOWED and target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)} ({layer}) imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_engine_never_imports_streamlit():
    users = [str(p.relative_to(ROOT)) for p in engine_modules()
             if any(m.split(".")[0] == "streamlit" for m, _ in imported_modules(p))]
    assert not users


def test_no_engine_module_imports_another_modules_private_names():
    wrong = [f"{p.relative_to(ROOT)}: {m}.{name}" for p in engine_modules() for m, names in imported_modules(p)
             if m.startswith("tac_core") for name in names if name.startswith("_") and not name.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_modules_stay_small():
    sources = [*engine_modules(), *(ROOT / "ui").glob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "app.py"]
    big = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big


def test_page_file_names_are_ascii():
    assert all(p.name.isascii() for p in (ROOT / "pages").iterdir())


@pytest.mark.slow
def test_the_public_api_loads_lazily_and_resolves():
    code = ("import sys, tac_core\n"
            "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules\n"
            "missing = [n for n in tac_core.__all__ if getattr(tac_core, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert issubclass(tac_core.InvalidInputError, tac_core.TacError)\n"
            "print(tac_core.TAC.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tac_core.cluster.tac"


@pytest.mark.slow
@pytest.mark.parametrize("view", ["ui.review_view", "ui.history_view", "ui.export_view", "ui.home_view"])
def test_pages_that_only_show_results_load_no_torch(view):
    """Importing torch and open_clip took ~9 of the Review page's 10 s first render at 20,000 images (py-spy)."""
    code = f"import sys, {view}\nprint(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error():
    import tac_core

    with pytest.raises(AttributeError, match="no attribute 'Tac'"):
        tac_core.Tac  # noqa: B018


def test_all_lists_every_exported_name_once():
    import tac_core

    assert sorted(tac_core.__all__) == sorted({"__version__", *tac_core._EXPORTS})
