"""The README stays true: its node reference is what ComfyUI reports, its commands are what CI runs, and its
performance figures come from bench/RESULTS.md."""
import re
import subprocess
import sys
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


def test_the_test_counts_are_what_this_checkout_collects():
    """The README's counts: the tests of a fresh clone (ComfyUI 0.3.75 alone) and, where current ComfyUI is set up
    too, of both; a test on current ComfyUI carries its host's id."""
    from comfyui import hosts

    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                               cwd=REPO, capture_output=True, text=True, timeout=300).stdout
    ids = [line for line in collected.splitlines() if "::" in line]
    current = [host.id for host in hosts()[1:]]
    alone = [i for i in ids if not any(host_id in i for host_id in current)]
    counts = README.split("a fresh clone alone sets up and tests ComfyUI 0.3.75 only, ")[1]
    assert counts.startswith(f"{len(alone)} tests;"), f"a fresh clone collects {len(alone)} tests"
    if current:
        assert f"the newest frontend, {len(ids)} tests." in README, f"this checkout collects {len(ids)} tests"


def test_each_workflow_row_names_its_input_files_and_where_they_go():
    from workflows import UI_WORKFLOWS, load_ui

    section = README.split("## Workflows")[1].split("\n### ")[0]
    rows = {line.split("`")[1]: line for line in section.splitlines() if line.startswith("| `")}
    assert sorted(rows) == UI_WORKFLOWS
    for name in UI_WORKFLOWS:
        inputs = [node["widgets_values"][0] for node in load_ui(name)["nodes"]
                  if node["type"] in ("LoadImage", "LoadVideo")]
        for file in inputs:
            assert f"`{file}`" in rows[name].split("|")[3], f"{name}: its input {file} is not named"
        if not inputs:
            assert rows[name].split("|")[3].strip() == "none", name
    assert "`build/comfyui-home/input/`" in section and "`POST /upload/image`" in section


def test_troubleshooting_quotes_the_messages_as_they_are():
    troubleshooting = README.split("## Troubleshooting")[1].split("\n## ")[0]
    assert f"| `{main_job.port_taken(8188)}` |" in troubleshooting
