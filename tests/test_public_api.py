"""The nodes are adapters over t2v_core's public API: they reach nothing of it outside ``t2v_core.__all__``."""
import ast
from pathlib import Path

import t2v_core

NODES = Path(__file__).resolve().parents[1] / "nodes"


def test_nodes_use_only_the_public_api():
    used, deep = set(), []
    for path in sorted(NODES.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and (node.module or "").startswith("t2v_core"):
                deep.append(f"{path.name}: from ..{node.module} import ...")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "t2v_core":
                used.add(node.attr)
    assert deep == []
    assert used and used <= set(t2v_core.__all__), sorted(used - set(t2v_core.__all__))
    assert all(hasattr(t2v_core, name) for name in t2v_core.__all__)
