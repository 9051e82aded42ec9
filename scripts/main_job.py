"""Start ComfyUI headless with this pack, queue workflows/api/text_to_video_api.json and print the video's path.

Real weights are used when the models folder (under --home) holds the published files text_to_video.json names, or
models/text2video holds a checkpoint; otherwise a small random-weight smoke checkpoint is made and
workflows/api/smoke_test_api.json runs on it, and everything it writes is labelled as such. --ui starts ComfyUI
with the pack and keeps it serving at the printed address (open it in a browser) without queueing the job.

The options are checked before anything is installed; then the runtime is set up (scripts/setup) and the job runs
on the interpreter of .venv. However this script ends, the ComfyUI it started ends with it.
"""
import argparse
import ctypes
import errno
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
WORKFLOWS = REPO / "workflows"
sys.path.insert(0, str(REPO))
PORT = (1, 65535)
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")  # ComfyUI's --preview-method choices
log = logging.getLogger("main_job")

SMOKE = "smoke-test-random-weights.safetensors"
PACK_NAME = "ComfyUI-ModelScope-T2V"  # the folder name in custom_nodes, under which the template browser lists us
FROM_CHECKPOINT = "from checkpoint"
RUN_TIMEOUT_S = 6 * 3600


def make_smoke_checkpoint(path):
    """A tiny checkpoint with random weights in the project's one-file format: it proves the install, not the model."""
    import torch

    from t2v_core import NoiseSchedule, Pipeline, save_single_file
    from t2v_core.text_encoder import TextEncoder, TextEncoderConfig
    from t2v_core.unet3d import UNet3D, UNet3DConfig
    from t2v_core.vae import AutoencoderKL, VAEConfig

    torch.manual_seed(0)
    unet = UNet3D(UNet3DConfig(block_out_channels=(32, 64), cross_attention=(True, False), layers_per_block=1,
                               context_dim=128, head_dim=8))
    vae = AutoencoderKL(VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1))
    text = TextEncoder(TextEncoderConfig(width=128, heads=2, layers=2))
    save_single_file(Pipeline(unet, vae, text, NoiseSchedule()), path)


def find_checkpoint(folder):
    """The first whole real checkpoint in ``folder``: a checkpoint folder or a one-file checkpoint (a UNet file
    alone has no text encoder)."""
    from t2v_core import CheckpointError, detect_format
    from t2v_core.checkpoint import PICKLE_SUFFIXES

    for entry in sorted(folder.iterdir()):
        if entry.name == SMOKE or entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix not in (".safetensors", *PICKLE_SUFFIXES):
            continue
        try:
            if detect_format(entry) != "unet_file":
                return entry.name
        except CheckpointError:
            continue
    return None


def has_published_files(models, template):
    """Whether the model files the UI workflow ``template`` declares are all in ``models``."""
    declared = json.loads((WORKFLOWS / f"{template}.json").read_text())["models"]
    return all((models / model["directory"] / model["name"]).is_file() for model in declared)


def api_workflow(template):
    return json.loads((WORKFLOWS / "api" / f"{template}_api.json").read_text())


def request(url, data=None):
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line that names the option and what it takes, exit status 2 (argparse's own adds the usage)."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def core_settings():
    """t2v_core's settings table (the nodes' ranges and defaults), read from its file: importing the package would
    import torch, which may not be installed yet when the options are checked."""
    spec = importlib.util.spec_from_file_location("t2v_core_settings", REPO / "t2v_core" / "settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SETTINGS


def whole_number(low, high):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}")
        return value

    return parse


def absolute_path(text):
    """ComfyUI runs in build/ComfyUI: a folder given relative to where scripts/run started must not move there."""
    return Path(text).expanduser().resolve()


def parser():
    parser = Parser(prog="scripts/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=absolute_path, default=REPO / "build" / "comfyui-home",
                        help="ComfyUI's base folder (models/, output/, custom_nodes/); default build/comfyui-home")
    parser.add_argument("--port", type=whole_number(*PORT), default=8188, help="port on 127.0.0.1 (default 8188)")
    parser.add_argument("--prompt", default=None, help="what the video shows (default: the workflow's prompt)")
    frames, steps, seed = (core_settings()[name] for name in ("num_frames", "steps", "seed"))
    parser.add_argument("--frames", type=whole_number(frames.low, frames.high), default=None,
                        help=f"number of frames, {frames.low}-{frames.high} (default {frames.default}; 8 for the "
                             f"smoke test)")
    parser.add_argument("--steps", type=whole_number(steps.low, steps.high), default=None,
                        help=f"sampling steps, {steps.low}-{steps.high} (default {steps.default}; 4 for the smoke "
                             f"test)")
    parser.add_argument("--seed", type=whole_number(seed.low, seed.high), default=seed.default,
                        help=f"seed of the noise video (default {seed.default})")
    parser.add_argument("--preview-method", choices=PREVIEW_METHODS, default="auto",
                        help="live previews on the sampler, as ComfyUI's option of that name (default auto)")
    parser.add_argument("--ui", action="store_true",
                        help="start ComfyUI and keep it serving at the printed address; queue nothing")
    return parser


def port_is_free(port):
    """Whether ComfyUI can listen on ``port``. Its server binds with SO_REUSEADDR, as this check does, so a port held
    only by TIME-WAIT sockets (a server that just stopped) is free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_taken(port):
    return SystemExit(f"Port {port} on 127.0.0.1 is already in use (another ComfyUI?); "
                      f"stop that server or choose a free port with --port, e.g. --port {port + 1}")


def end_with_parent():
    """In the child, before exec: Linux sends it SIGTERM when this script's process ends, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def comfyui_command(home, port, preview_method, device):
    """ComfyUI's command line. Its database is a file in ``home``'s user folder: an in-memory one logs three
    sqlite3.ProgrammingError tracebacks (0.3.75) when the prompt worker's garbage collection closes it in
    another thread."""
    return [sys.executable, "main.py", device, "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
            str(home), "--preview-method", preview_method, "--database-url",
            f"sqlite:///{home / 'user' / 'comfyui.db'}", "--disable-api-nodes"]


def start_comfyui(home, port, preview_method):
    """ComfyUI 0.3.75 of build/ComfyUI serving ``home`` on 127.0.0.1:``port`` with this pack linked in."""
    import torch

    if not port_is_free(port):
        raise port_taken(port)
    for folder in ("custom_nodes", "user"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    link = home / "custom_nodes" / PACK_NAME
    if link.is_symlink() and link.resolve() != REPO:
        link.unlink()  # a link to another checkout, or a broken one
    if not link.exists():
        link.symlink_to(REPO)
    logfile = home / "comfyui.log"
    log.info("Starting ComfyUI (log: %s)", logfile)
    device = "--cpu" if not torch.cuda.is_available() else "--normalvram"
    process = subprocess.Popen(
        comfyui_command(home, port, preview_method, device), cwd=REPO / "build" / "ComfyUI",
        stdout=open(logfile, "w"), stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=end_with_parent)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if process.poll() is not None:
            if "address already in use" in logfile.read_text(errors="replace").lower():
                raise port_taken(port)
            raise SystemExit(f"ComfyUI stopped at start; see {logfile}")
        try:
            if "ModelScopeT2VSampler" in request(f"{url}/object_info/ModelScopeT2VSampler"):
                return process, url
            raise SystemExit(f"ComfyUI started without this pack's nodes; see {logfile}")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise SystemExit(f"ComfyUI did not answer on {url}; see {logfile}")


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def exit_on_signal(signum, frame):
    """SIGTERM and SIGHUP end the script like Ctrl-C does: through the ``finally`` that stops ComfyUI."""
    raise SystemExit(128 + signum)


def prepare_workflow(args):
    """The shipped API workflow with the options applied, and the checkpoint it names."""
    models = args.home / "models"
    (models / "text2video").mkdir(parents=True, exist_ok=True)
    if has_published_files(models, "text_to_video"):
        workflow = api_workflow("text_to_video")
    elif (checkpoint := find_checkpoint(models / "text2video")) is not None:
        workflow = api_workflow("text_to_video")
        workflow["1"]["inputs"].update(ckpt_name=checkpoint, vae_name=FROM_CHECKPOINT,
                                       text_encoder_name=FROM_CHECKPOINT)
    else:
        log.info("No checkpoint in %s.\nPut the published files there (README: 'Where the weights go'), or a "
                 "ModelScope or diffusers checkpoint folder in %s.\nUsing a small RANDOM-WEIGHT SMOKE-TEST "
                 "checkpoint instead: the video will be noise; it proves the install works.", models,
                 models / "text2video")
        if not (models / "text2video" / SMOKE).exists():
            make_smoke_checkpoint(models / "text2video" / SMOKE)
        workflow = api_workflow("smoke_test")
    checkpoint = workflow["1"]["inputs"]["ckpt_name"]
    if checkpoint != SMOKE:
        log.info("Using the checkpoint %s", checkpoint)
        import torch

        if not torch.cuda.is_available():
            log.info("No GPU: the full-size model on CPU takes minutes per step; try --frames 4 --steps 10 first.")
    latent, sampler = workflow["4"]["inputs"], workflow["5"]["inputs"]
    latent["seed"] = args.seed
    if args.prompt:
        workflow["2"]["inputs"]["text"] = args.prompt
    if args.frames is not None:
        latent["length"] = args.frames
    if args.steps is not None:
        sampler["steps"] = args.steps
    return workflow, checkpoint


def run_job(url, workflow, checkpoint, process, home):
    """Queue the workflow, wait for it and return the path of the video."""
    try:
        prompt_id = request(f"{url}/prompt", {"prompt": workflow})["prompt_id"]
    except urllib.error.HTTPError as e:
        raise SystemExit(f"ComfyUI refused the workflow: {refusal(e)}") from None
    log.info("Queued %s on %s; waiting for the video", prompt_id, checkpoint)
    deadline = time.time() + RUN_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise SystemExit(f"ComfyUI stopped during the run; see {home / 'comfyui.log'}")
        if time.time() > deadline:
            raise SystemExit(f"The run did not finish within {RUN_TIMEOUT_S // 3600} hours")
        history = request(f"{url}/history/{prompt_id}").get(prompt_id)
        if history and history["status"]["status_str"] in ("success", "error"):
            break
        time.sleep(1)
    if history["status"]["status_str"] != "success":
        errors = [m[1].get("exception_message") for m in history["status"]["messages"] if m[0] == "execution_error"]
        raise SystemExit("The workflow failed: " + "; ".join(e.strip() for e in errors if e))
    item = history["outputs"]["7"]["images"][0]
    return home / "output" / item["subfolder"] / item["filename"]


def refusal(error):
    """ComfyUI's 400 answer as one line per input it names."""
    try:
        body = json.loads(error.read())
    except ValueError:
        return str(error)
    lines = [f"{e.get('message')}: {e.get('details')}" for node in body.get("node_errors", {}).values()
             for e in node.get("errors", [])]
    return "; ".join(lines) or body.get("error", {}).get("message", str(body))


def in_venv():
    return Path(sys.prefix).resolve() == VENV.resolve()


def main():
    args = parser().parse_args()
    if not in_venv():
        setup = subprocess.run(["bash", str(REPO / "scripts" / "setup")])
        if setup.returncode:
            raise SystemExit(setup.returncode)
        os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGHUP, exit_on_signal)
    workflow, checkpoint = prepare_workflow(args)
    process, url = start_comfyui(args.home, args.port, args.preview_method)
    try:
        if args.ui:
            template = "smoke_test" if checkpoint == SMOKE else "text_to_video"
            log.info("ComfyUI is running at %s: open it in a browser, click the ComfyUI logo at the top left, then "
                     "Browse Templates > Extensions > %s > %s (or drag workflows/%s.json onto the page) and Run. "
                     "Ctrl-C stops it.", url, PACK_NAME, template, template)
            process.wait()
            return
        print(run_job(url, workflow, checkpoint, process, args.home))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        stop(process)


if __name__ == "__main__":
    main()
