"""The README stays true: its node reference is what ComfyUI reports, its commands are what CI runs, and its
performance figures come from bench/RESULTS.md."""
import re
from pathlib import Path

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
