"""What the Comfy Registry and ComfyUI-Manager read: pyproject.toml passes comfy-cli's own check, names the
repository, an icon and the oldest ComfyUI the tests cover, and the code's licence is in LICENSE."""
import subprocess
import sys
import tomllib
from pathlib import Path

from comfyui import BASELINE, REPO, version_of

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_comfy_node_validate_passes():
    comfy = Path(sys.executable).with_name("comfy")
    result = subprocess.run([str(comfy), "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "All validation checks passed" in output, output


def test_the_code_licence_is_the_one_pyproject_names():
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text


def test_repository_and_icon_are_https_and_the_icon_is_shipped():
    urls, comfy = PYPROJECT["project"]["urls"], PYPROJECT["tool"]["comfy"]
    assert urls["Repository"].startswith("https://github.com/")
    assert all(url.startswith(urls["Repository"]) for url in urls.values())
    icon = comfy["Icon"]
    assert icon.startswith("https://raw.githubusercontent.com/") and (REPO / icon.split("/main/", 1)[1]).is_file()


def test_requires_comfyui_is_the_oldest_tested_version():
    assert PYPROJECT["tool"]["comfy"]["requires-comfyui"] == f">={version_of(BASELINE)}"
