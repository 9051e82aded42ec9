"""The README stays true: its node reference is what ComfyUI reports, its commands are what CI runs, and its
performance figures come from bench/RESULTS.md."""
import re
from pathlib import Path

from scripts import main_job
from scripts.node_reference import reference

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_node_reference_matches_object_info(comfy):
    assert reference(comfy.get("/object_info")) in README, "regenerate it: scripts/node_reference.py"


def test_two_setup_commands_and_ci_runs_the_test_one():
    assert "bash scripts/run" in README and "bash scripts/test" in README
    assert "bash scripts/test" in (REPO / ".ci" / "run").read_text()


def test_performance_figures_come_from_the_results_file():
    results = (REPO / "bench" / "RESULTS.md").read_text()
    figures = re.findall(r"(\d+\.\d+)x", README.split("## Performance")[1].split("##")[0])
    assert figures, "the README's performance section quotes no ratio"
    for figure in figures:
        assert figure in results, f"{figure} is not in bench/RESULTS.md"


def test_requirements_never_name_torch():
    names = [re.split(r"[<>=~ ]", line)[0].lower() for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert not {"torch", "torchvision", "torchaudio"} & set(names)


def test_every_option_of_the_main_job_is_documented():
    documented = README.split("## Run it without ComfyUI installed")[1].split("## Nodes")[0]
    for action in main_job.parser()._actions:
        if action.option_strings and action.option_strings[0] != "-h":
            assert f"`{action.option_strings[0]}" in documented, f"{action.option_strings[0]} is not in the README"
    assert "PYTHON=" in documented


def test_tested_comfyui_and_frontend_versions_are_stated():
    from comfyui import BASELINE, hosts, version_of

    tested = README.split("### Tested ComfyUI versions")[1].split("###")[0]
    for host in hosts():
        assert f"| {host.version} " in tested
    assert f"| {version_of(BASELINE)} " in tested
    frontend = (REPO / "scripts" / "setup-dev").read_text().split("FRONTEND=")[1].split()[0]
    assert frontend in tested and "COMFYUI_DIR" in tested and "COMFYUI_PYTHON" in tested
    for requirements in (BASELINE / "requirements.txt", REPO / "build" / "ComfyUI-current" / "requirements.txt"):
        if requirements.exists():
            bundled = requirements.read_text().split("comfyui-frontend-package==")[1].split()[0]
            assert bundled in tested, f"{requirements}: bundled frontend {bundled} is not named"
