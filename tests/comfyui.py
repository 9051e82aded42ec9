"""Real ComfyUI servers for the tests: the ComfyUI versions set up here, each started on 127.0.0.1 with this pack
installed, and a small client for them."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import websocket

from scripts.main_job import PACK_NAME, end_with_parent

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "build" / "ComfyUI"  # 0.3.75 from PyPI (scripts/setup)
CURRENT = REPO / "build" / "ComfyUI-current"  # current ComfyUI (scripts/setup-current-comfyui)
NEWEST_FRONTEND = REPO / "build" / "frontend"  # the newest frontend on PyPI (scripts/setup-dev)


@dataclass(frozen=True)
class Host:
    """A ComfyUI tree, the interpreter it runs on, and the frontend it serves (None: the one it bundles)."""

    version: str
    root: Path
    python: str
    frontend: Path | None = None
    frontend_version: str = "bundled"

    @property
    def id(self):
        return f"comfyui-{self.version}" + (f"+frontend-{self.frontend_version}" if self.frontend else "")


def version_of(root):
    text = (root / "comfyui_version.py").read_text()
    return text.split('__version__ = "')[1].split('"')[0]


def hosts():
    """Every ComfyUI set up here: 0.3.75, and current ComfyUI when scripts/setup-current-comfyui found one."""
    found = [Host(version_of(BASELINE), BASELINE, sys.executable)]
    if (CURRENT / ".python").is_file():
        found.append(Host(version_of(CURRENT), CURRENT, (CURRENT / ".python").read_text().strip()))
    return found


def with_newest_frontend(host):
    """``host`` serving the frontend of build/frontend, or None when that is not set up."""
    static = NEWEST_FRONTEND / "comfyui_frontend_package" / "static"
    if not static.is_dir():
        return None
    return replace(host, frontend=static, frontend_version=(NEWEST_FRONTEND / ".version").read_text().strip())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python main.py --cpu`` in a base directory of its own (custom_nodes, models, input, output, temp, user)."""

    def __init__(self, host, base, extra_args=()):
        self.host = host
        self.base = Path(base)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for folder in ("custom_nodes", "models/text2video", "models/vae", "models/diffusion_models", "models/loras",
                       "models/text_encoders", "input", "output"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        (self.base / "custom_nodes" / PACK_NAME).symlink_to(REPO)
        self.log = open(self.base / "comfyui.log", "w")
        frontend = ["--front-end-root", str(host.frontend)] if host.frontend else []
        self.process = subprocess.Popen(
            [host.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:", "--disable-api-nodes",
             "--preview-method", "auto", *frontend, *extra_args],
            cwd=host.root, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=end_with_parent)  # a test run killed without its teardown leaves no server behind
        self.wait_ready()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_text()[-5000:]}")
            try:
                self.get("/object_info/ModelScopeT2VSampler")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log_text()[-5000:]}")

    def log_text(self):
        self.log.flush()
        return (self.base / "comfyui.log").read_text()

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()

    # --- HTTP -----------------------------------------------------------------------------------------------

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path, data):
        request = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def queue(self, prompt, client_id=None):
        """POST /prompt: (status, body)."""
        return self.post("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})

    def wait(self, prompt_id, timeout=300):
        """The /history entry of a finished prompt."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"]["status_str"] in ("success", "error"):
                return history[prompt_id]
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt, timeout=300):
        """Queue ``prompt`` and wait for it; fails on a validation error."""
        status, body = self.queue(prompt)
        assert status == 200, body
        return self.wait(body["prompt_id"], timeout)

    def run_watching(self, prompt, on_message=None, timeout=300):
        """Queue ``prompt`` with a websocket open; returns every message until the prompt ends.

        ``on_message(message)`` may act on the way (e.g. interrupt); messages are dicts with ``type`` and ``data``.
        """
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            status, body = self.queue(prompt, client_id)
            assert status == 200, body
            messages = []
            while True:
                raw = ws.recv()
                if not isinstance(raw, str):
                    messages.append({"type": "binary", "data": raw})
                    continue
                message = json.loads(raw)
                messages.append(message)
                if on_message is not None:
                    on_message(message)
                data = message.get("data", {})
                if data.get("prompt_id") != body["prompt_id"]:
                    continue
                if message["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                    return messages
        finally:
            ws.close()

    def in_process(self, check, *args, timeout=600):
        """The JSON report of ``tests/in_comfyui.py CHECK ARGS`` on this server's ComfyUI tree and interpreter,
        with the pack as this server has it (checks of ComfyUI's own code that a server cannot show)."""
        result = subprocess.run([self.host.python, str(REPO / "tests" / "in_comfyui.py"), ".",
                                 str(self.base / "custom_nodes"), PACK_NAME, check, *map(str, args)],
                                cwd=self.host.root, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def output_path(self, item):
        return self.base / "output" / item["subfolder"] / item["filename"]
