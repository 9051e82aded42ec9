"""Writes docs/nodes.md, the node reference (every input, its default and its tooltip), from a running ComfyUI.

Usage: .venv/bin/python scripts/node_reference.py http://127.0.0.1:8188
(a ComfyUI running with this pack, e.g. `bash scripts/run --ui`; tests/test_docs.py checks the file is current).
"""
import json
import sys
import urllib.request
from pathlib import Path

NODES_MD = Path(__file__).resolve().parents[1] / "docs" / "nodes.md"
INTRO = """# Nodes

Every input of the pack's nodes, its default and its tooltip, as ComfyUI reports them. Written by
`scripts/node_reference.py` from a running ComfyUI; `tests/test_docs.py` checks that it is current.
"""


def reference(info):
    lines = []
    for node_id, node in sorted(info.items()):
        if not node_id.startswith("ModelScopeT2V"):
            continue
        lines += [f"## {node['display_name']} (`{node_id}`)", "", node["description"], "",
                  "| input | type | default | what it does |", "|---|---|---|---|"]
        for group in ("required", "optional"):
            for name, (kind, *rest) in node["input"].get(group, {}).items():
                options = rest[0] if rest else {}
                kind = "COMBO" if isinstance(kind, list) else kind
                default = options.get("default", "")
                shown = f"`{default}`" if default != "" else ""
                optional = " (optional)" if group == "optional" else ""
                lines.append(f"| `{name}`{optional} | {kind} | {shown} | {options.get('tooltip', '')} |")
        outputs = ", ".join(f"`{o}`" for o in node["output"]) or "a video file, previewed on the node"
        lines += ["", f"Outputs: {outputs}.", ""]
    return "\n".join(lines)


def nodes_md(info):
    """The whole of docs/nodes.md for ComfyUI's ``/object_info``."""
    return f"{INTRO}\n{reference(info)}"


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188"
    with urllib.request.urlopen(f"{url}/object_info") as r:
        NODES_MD.write_text(nodes_md(json.load(r)))
    print(NODES_MD)
