"""The README and docs/ stay true: the node reference is what ComfyUI reports, the commands are what CI runs and
work as written, the performance figures come from bench/RESULTS.md, and every link leads somewhere."""
import json

import pytest
import re
import subprocess
from pathlib import Path

from scripts import main_job
from scripts.node_reference import NODES_MD, nodes_md

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
README_LINES = 300  # the README is a user's first hour; the rest lives in docs/


def section(text, title):
    """The body of the section headed ``title`` (any level), up to the next heading of the same or a higher level."""
    level, rest = re.search(rf"^(#+) {re.escape(title)}\n(.*)", text, re.M | re.S).groups()
    return re.split(rf"^#{{1,{len(level)}}} ", rest, flags=re.M)[0]


def test_node_reference_matches_object_info(comfy):
    assert NODES_MD.read_text() == nodes_md(comfy.get("/object_info")), "regenerate it: scripts/node_reference.py"


def test_two_setup_commands_and_ci_runs_the_test_one():
    commands = section(README, "Try it first: two commands")
    assert "```bash\nbash scripts/run\nbash scripts/test\n```" in commands
    first_test_command = next(line for line in README.splitlines() if "test" in line and line.startswith("bash "))
    assert first_test_command == "bash scripts/test"
    assert first_test_command in (REPO / ".ci" / "run").read_text()


def test_the_readme_is_short_and_names_its_limitations_and_docs():
    lines = README.splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"
    assert "## Limitations (from the model card)" in lines
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", README))
    assert linked == {p.name for p in DOCS.glob("*.md")}, "every docs/*.md is linked from the README"


def test_every_relative_link_leads_to_a_file_or_a_heading():
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target} does not exist"
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
                assert anchor in anchors, f"{page.name}: no heading #{anchor} in {linked.name}"


def test_performance_figures_come_from_the_results_file():
    results = (REPO / "bench" / "RESULTS.md").read_text()
    performance = (DOCS / "performance.md").read_text()
    figures = re.findall(r"(\d+\.\d+)x", performance) + re.findall(r"(\d+\.\d+) (?:TFLOP|GiB|s\b)", performance)
    assert figures, "docs/performance.md quotes no figure"
    for figure in figures:
        assert figure in results, f"{figure} is not in bench/RESULTS.md"


def test_requirements_never_name_torch():
    names = [re.split(r"[<>=~ ]", line)[0].lower() for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert not {"torch", "torchvision", "torchaudio"} & set(names)


def test_every_option_of_the_main_job_is_documented():
    documented = section(README, "Try it first: two commands")
    for action in main_job.parser()._actions:
        if action.option_strings and action.option_strings[0] != "-h":
            assert f"`{action.option_strings[0]}" in documented, f"{action.option_strings[0]} is not in the README"
    assert "PYTHON=" in documented


def test_tested_comfyui_and_frontend_versions_are_stated():
    from comfyui import BASELINE, hosts, version_of

    tested = section((DOCS / "development.md").read_text(), "Tested ComfyUI versions")
    for host in hosts():
        assert f"| {host.version} " in tested
    assert f"| {version_of(BASELINE)} " in tested
    frontend = (REPO / "scripts" / "setup-dev").read_text().split("FRONTEND=")[1].split()[0]
    assert frontend in tested and "COMFYUI_DIR" in tested and "COMFYUI_PYTHON" in tested
    first_video = section(README, "Your first video")
    assert frontend in first_video, "the template browser's route is named for the newest frontend too"
    for requirements in (BASELINE / "requirements.txt", REPO / "build" / "ComfyUI-current" / "requirements.txt"):
        if requirements.exists():
            bundled = requirements.read_text().split("comfyui-frontend-package==")[1].split()[0]
            assert bundled in tested, f"{requirements}: bundled frontend {bundled} is not named"
            assert bundled in first_video, f"the template browser's route is not named for frontend {bundled}"


def test_each_workflow_row_names_its_input_files_and_where_they_go():
    from workflows import UI_WORKFLOWS, load_ui

    workflows = section(README, "Workflows")
    rows = {line.split("`")[1]: line for line in workflows.splitlines() if line.startswith("| `")}
    assert sorted(rows) == UI_WORKFLOWS
    for name in UI_WORKFLOWS:
        inputs = [node["widgets_values"][0] for node in load_ui(name)["nodes"]
                  if node["type"] in ("LoadImage", "LoadVideo")]
        for file in inputs:
            assert f"`{file}`" in rows[name].split("|")[3], f"{name}: its input {file} is not named"
        if not inputs:
            assert rows[name].split("|")[3].strip() == "none", name
    assert "`build/comfyui-home/input/`" in workflows and "`POST /upload/image`" in workflows


@pytest.mark.xfail(reason="the random-weight smoke checkpoint sometimes samples NaN latents in a server that has run other tests (never in a fresh one); under investigation", strict=False)
def test_the_readme_s_post_prompt_line_queues_the_smoke_test(comfy, smoke_checkpoint):
    """The copy-paste line of the README, pointed at the test server, is answered with a prompt id and runs."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "/prompt" in b)
    command = block.replace("http://127.0.0.1:8188", comfy.url)
    assert command != block
    result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert "prompt_id" in answer, answer
    assert comfy.wait(answer["prompt_id"])["status"]["status_str"] == "success"


def test_troubleshooting_quotes_the_messages_as_they_are():
    troubleshooting = section(README, "Troubleshooting")
    assert f"| `{main_job.port_taken(8188)}` |" in troubleshooting
