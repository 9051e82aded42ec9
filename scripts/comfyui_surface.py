"""The ComfyUI names the pack reaches, read from its source: every name it imports from ComfyUI, every dotted name
it reads or calls through those imports, every core class it subclasses with the names the subclass defines
over it, and every core name it assigns. ``docs/comfyui-surface.md`` holds the list; tests/test_comfyui_surface.py
fails when the code and the list differ, so a new coupling to ComfyUI is a visible diff.

Run ``python scripts/comfyui_surface.py`` to rewrite the list in docs/comfyui-surface.md after a change.
"""
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["__init__.py", "nodes"]
# Top-level modules of a ComfyUI tree (core's own, not the pack's or a library's).
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "latent_preview",
                   "node_helpers", "nodes", "server", "execution"}
DOC = REPO / "docs" / "comfyui-surface.md"
BEGIN, END = "<!-- surface:begin -->", "<!-- surface:end -->"


def source_files():
    for entry in SOURCES:
        path = REPO / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def is_comfyui(module):
    return module is not None and module.split(".")[0] in COMFYUI_MODULES


def dotted(node):
    """``a.b.c`` for an attribute chain on a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


class Surface(ast.NodeVisitor):
    """The ComfyUI names one module reaches; ``aliases`` maps a local name to the ComfyUI name it stands for."""

    def __init__(self):
        self.aliases, self.names = {}, set()

    def visit_Import(self, node):
        for alias in node.names:
            if is_comfyui(alias.name):
                local = alias.asname or alias.name.split(".")[0]
                self.aliases[local] = alias.name if alias.asname else local
                self.names.add(alias.name)

    def visit_ImportFrom(self, node):
        if node.level or not is_comfyui(node.module):
            return
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            self.names.add(full)

    def resolve(self, node):
        """The ComfyUI name an expression stands for (through the aliases), or None."""
        name = dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head not in self.aliases:
            return None
        return ".".join(filter(None, [self.aliases[head], rest]))

    def visit_Attribute(self, node):
        full = self.resolve(node)
        if full is not None:
            self.names.add(full)
            return  # the longest chain only
        self.generic_visit(node)

    def visit_ClassDef(self, node):
        for base in node.bases:
            full = self.resolve(base)
            if full is None:
                continue
            self.names.add(f"subclass {full}")
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.names.add(f"subclass {full}: defines {item.name}")
                elif isinstance(item, ast.Assign):
                    for target in item.targets:
                        if isinstance(target, ast.Name):
                            self.names.add(f"subclass {full}: sets {target.id}")
        self.generic_visit(node)

    def visit_Assign(self, node):
        for target in node.targets:
            full = self.resolve(target) if isinstance(target, ast.Attribute) else None
            if full is not None:
                self.names.add(f"assigns {full}")
        self.generic_visit(node)


def surface():
    """{ComfyUI name: sorted pack files that reach it}."""
    found = {}
    for path in source_files():
        visitor = Surface()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for name in visitor.names:
            found.setdefault(name, set()).add(path.relative_to(REPO).as_posix())
    return {name: sorted(files) for name, files in sorted(found.items())}


def listing(found):
    return "\n".join(f"- `{name}` ({', '.join(files)})" for name, files in found.items())


def documented():
    """The list as docs/comfyui-surface.md holds it."""
    text = DOC.read_text()
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n")


def write():
    text = DOC.read_text()
    head, tail = text[:text.index(BEGIN) + len(BEGIN)], text[text.index(END):]
    DOC.write_text(f"{head}\n{listing(surface())}\n{tail}")


if __name__ == "__main__":
    write()
    sys.stdout.write(f"{DOC.relative_to(REPO)}: {len(surface())} names\n")
