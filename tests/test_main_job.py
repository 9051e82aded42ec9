"""scripts/run, the main job, as a new user meets it: bad options, a taken port, signals, what it says it does."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from comfyui import REPO, free_port, hosts
from t2v_core import SETTINGS
from workflows import api_twin, load, nodes_of
from scripts import main_job

RUN = ["bash", str(REPO / "scripts" / "run")]


def run(*args, timeout=300):
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def whole_number(name, value):
    """scripts/run's refusal of ``value`` for the setting ``name``, with the setting's range."""
    setting = SETTINGS[name]
    return f"must be a whole number from {setting.low} to {setting.high}, got {value!r}"


@pytest.mark.parametrize("option, value, expected", [
    ("--frames", "0", whole_number("num_frames", "0")),
    ("--steps", "0", whole_number("steps", "0")),
    ("--frames", "many", whole_number("num_frames", "many")),
    ("--steps", str(SETTINGS["steps"].high + 1), whole_number("steps", str(SETTINGS["steps"].high + 1))),
    ("--seed", "-1", whole_number("seed", "-1")),
    ("--port", "70000", "must be a whole number from 1 to 65535, got '70000'"),
])
def test_bad_options_are_refused_in_one_line(option, value, expected, capsys):
    """The option parser of scripts/run, in-process: one line naming the option and its range, exit status 2."""
    with pytest.raises(SystemExit) as refused:
        main_job.parser().parse_args([option, value])
    assert refused.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"{option}: {expected}" in message, message


def test_options_are_checked_before_the_runtime_is_there():
    """scripts/run checks its options with the interpreter that makes .venv, before torch is there to import."""
    result = run("--frames", "0", timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"--frames: {whole_number('num_frames', '0')}" in result.stderr, \
        result.stderr


def test_the_main_job_says_what_it_does_and_prints_the_video(tmp_path):
    result = run("--home", str(tmp_path), "--port", str(free_port()), "--frames", "2", "--steps", "1")
    assert result.returncode == 0, result.stderr
    video = Path(result.stdout.strip())
    assert video.suffix == ".mp4" and video.stat().st_size > 0 and video.is_relative_to(tmp_path / "output")
    for step in ("RANDOM-WEIGHT SMOKE-TEST", "Starting ComfyUI", "Queued"):
        assert step in result.stderr
    log = (tmp_path / "comfyui.log").read_text()
    assert "Prompt executed" in log and "Traceback" not in log, log
    assert (tmp_path / "user" / "comfyui.db").is_file()  # the database ComfyUI was given, not an in-memory one


def test_the_preview_method_takes_comfyui_s_choices_and_is_passed_on(capsys):
    for host in hosts():
        choices = subprocess.run([host.python, "-c", "import comfy.cli_args as a; "
                                  "print(' '.join(m.value for m in a.LatentPreviewMethod))"],
                                 cwd=host.root, capture_output=True, text=True, check=True).stdout.split()
        assert tuple(choices) == main_job.PREVIEW_METHODS, host.version
    assert main_job.parser().parse_args([]).preview_method == "auto"
    args = main_job.parser().parse_args(["--preview-method", "taesd"])
    command = main_job.comfyui_command(args.home, args.port, args.preview_method, "--cpu")
    assert command[command.index("--preview-method") + 1] == "taesd"
    with pytest.raises(SystemExit) as refused:
        main_job.parser().parse_args(["--preview-method", "fast"])
    assert refused.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "--preview-method: invalid choice: 'fast'" in message, message


def test_a_relative_home_is_where_scripts_run_started():
    """ComfyUI runs in build/ComfyUI: its --base-directory must name the folder the user meant."""
    args = main_job.parser().parse_args(["--home", "relative"])
    command = main_job.comfyui_command(args.home, args.port, args.preview_method, "--cpu")
    assert command[command.index("--base-directory") + 1] == str(Path.cwd() / "relative")


def test_a_taken_port_is_named_with_the_option_to_change_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--home", str(tmp_path), "--port", str(port), timeout=120)
    assert result.returncode != 0
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr and "--port" in result.stderr, result.stderr
    assert "comfyui.log" not in result.stderr


def test_a_port_held_only_by_time_wait_sockets_is_free():
    """A server that just stopped leaves its port in TIME-WAIT for a minute; ComfyUI (SO_REUSEADDR) binds it at once."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ComfyUI's server listens
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the side that closes first keeps the TIME-WAIT socket, on the server's port
        client.close()
    time.sleep(0.2)
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the port is held: a bind without SO_REUSEADDR is refused
    assert main_job.port_is_free(port)


def port_serves(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    return stat[2] != "Z"


def assert_the_named_template_runs_here(message, port):
    """The template ``--ui`` points to is in the server's template browser, and its checkpoint is one the loader
    offers (without downloaded weights: the smoke checkpoint)."""
    pack, template = re.search(r"Browse Templates > Extensions > (\S+) > (\S+) ", message).groups()
    url = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{url}/workflow_templates") as r:
        assert template in json.loads(r.read())[pack]
    with urllib.request.urlopen(f"{url}/object_info/ModelScopeT2VCheckpointLoader") as r:
        options = json.loads(r.read())["ModelScopeT2VCheckpointLoader"]["input"]["required"]["ckpt_name"][1]["options"]
    loader = nodes_of(load(api_twin(f"{template}.json")), "ModelScopeT2VCheckpointLoader")[0]["inputs"]
    assert loader["ckpt_name"] in options, (message, options)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_the_ui_server_ends_with_the_script(tmp_path, signum):
    """SIGTERM ends the script through its cleanup; even SIGKILL, which nothing can catch, takes ComfyUI along."""
    port = free_port()
    script = subprocess.Popen([*RUN, "--ui", "--home", str(tmp_path), "--port", str(port)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in script.stderr:
            if "ComfyUI is running at" in line:
                break
        else:
            pytest.fail(f"scripts/run --ui ended with {script.wait()} before serving")
        assert port_serves(port)
        assert_the_named_template_runs_here(line, port)
        (server,) = children(script.pid)
        script.send_signal(signum)
        script.wait(60)
        deadline = time.time() + 30
        while (alive(server) or port_serves(port)) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(server) and not port_serves(port)
    finally:
        if script.poll() is None:
            script.kill()


def test_setup_says_what_it_does_stage_by_stage(tmp_path):
    """A first run installs for minutes: every stage is announced. A run with nothing to do prints nothing."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup", tmp_path / "scripts" / "setup")
    shutil.copy(REPO / "requirements.txt", tmp_path / "requirements.txt")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # installed already: pip finds every requirement met
    first = subprocess.run(["bash", str(tmp_path / "scripts" / "setup")], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    stages = [line for line in first.stderr.splitlines() if line.startswith("setup: ")]
    assert [s.split()[1] for s in stages] == ["updating", "fetching", "installing", "runtime"], first.stderr
    again = subprocess.run(["bash", str(tmp_path / "scripts" / "setup")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stderr == ""
