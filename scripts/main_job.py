"""Start ComfyUI headless with this pack, queue workflows/text_to_video_api.json and print the video's path.

Real weights are used when models/text2video (under --home) holds a checkpoint; otherwise a small random-weight
smoke checkpoint is made and used, and everything it writes is labelled as such. --ui keeps ComfyUI running and
prints the address of its page instead of exiting.
"""
import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from t2v_core import CheckpointError, NoiseSchedule, Pipeline, detect_format, save_single_file  # noqa: E402
from t2v_core.checkpoint import PICKLE_SUFFIXES  # noqa: E402
from t2v_core.text_encoder import TextEncoder, TextEncoderConfig  # noqa: E402
from t2v_core.unet3d import UNet3D, UNet3DConfig  # noqa: E402
from t2v_core.vae import AutoencoderKL, VAEConfig  # noqa: E402

SMOKE = "smoke-test-random-weights.safetensors"
RUN_TIMEOUT_S = 6 * 3600
log = logging.getLogger("main_job")


def make_smoke_checkpoint(path):
    """A tiny checkpoint with random weights in the project's one-file format: it proves the install, not the model."""
    torch.manual_seed(0)
    unet = UNet3D(UNet3DConfig(block_out_channels=(32, 64), cross_attention=(True, False), layers_per_block=1,
                               context_dim=128, head_dim=8))
    vae = AutoencoderKL(VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1))
    text = TextEncoder(TextEncoderConfig(width=128, heads=2, layers=2))
    save_single_file(Pipeline(unet, vae, text, NoiseSchedule()), path)


def find_checkpoint(folder):
    """The first real checkpoint in ``folder``: a checkpoint folder or a single weights file."""
    for entry in sorted(folder.iterdir()):
        if entry.name == SMOKE or entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix not in (".safetensors", *PICKLE_SUFFIXES):
            continue
        try:
            detect_format(entry)
            return entry.name
        except CheckpointError:
            continue
    return None


def request(url, data=None):
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def start_comfyui(home, port):
    (home / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = home / "custom_nodes" / "ComfyUI-ModelScope-T2V"
    if link.is_symlink() and link.resolve() != REPO:
        link.unlink()  # a link to another checkout, or a broken one
    if not link.exists():
        link.symlink_to(REPO)
    logfile = open(home / "comfyui.log", "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu" if not torch.cuda.is_available() else "--normalvram", "--listen", "127.0.0.1",
         "--port", str(port), "--base-directory", str(home), "--preview-method", "auto",
         "--database-url", "sqlite:///:memory:", "--disable-api-nodes"],
        cwd=REPO / "build" / "ComfyUI", stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if process.poll() is not None:
            sys.exit(f"ComfyUI stopped at start; see {home / 'comfyui.log'}")
        try:
            if "ModelScopeT2VSampler" in request(f"{url}/object_info/ModelScopeT2VSampler"):
                return process, url
            sys.exit(f"ComfyUI started without this pack's nodes; see {home / 'comfyui.log'}")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    sys.exit(f"ComfyUI did not answer on {url}; see {home / 'comfyui.log'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / "build" / "comfyui-home",
                        help="ComfyUI's base folder (models/, output/, custom_nodes/)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ui", action="store_true", help="keep ComfyUI running and print its address")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    models = args.home / "models" / "text2video"
    models.mkdir(parents=True, exist_ok=True)
    checkpoint = find_checkpoint(models)
    workflow = json.loads((REPO / "workflows" / "text_to_video_api.json").read_text())
    loader, sampler, latent, save = workflow["1"]["inputs"], workflow["5"]["inputs"], workflow["4"]["inputs"], workflow["7"]["inputs"]
    if checkpoint is None:
        log.info("No checkpoint in %s.\nPut the ModelScope files there (a folder holding configuration.json, "
                 "text2video_pytorch_model.pth, VQGAN_autoencoder.pth and open_clip_pytorch_model.bin), or a "
                 "diffusers folder (README: 'Where the weights go').\nUsing a small RANDOM-WEIGHT SMOKE-TEST "
                 "checkpoint instead: the video will be noise; it proves the install works.", models)
        if not (models / SMOKE).exists():
            make_smoke_checkpoint(models / SMOKE)
        checkpoint = SMOKE
        latent.update(width=64, height=64, length=8)
        sampler["steps"] = 4
        save["filename_prefix"] = "smoke-test-random-weights/video"
    else:
        log.info("Using the checkpoint %s", models / checkpoint)
        if not torch.cuda.is_available():
            log.info("No GPU: the full-size model on CPU takes minutes per step; try --frames 4 --steps 10 first.")
    loader["ckpt_name"] = checkpoint
    latent["seed"] = args.seed
    if args.prompt:
        workflow["2"]["inputs"]["text"] = args.prompt
    if args.frames:
        latent["length"] = args.frames
    if args.steps:
        sampler["steps"] = args.steps

    process, url = start_comfyui(args.home, args.port)
    try:
        if args.ui:
            log.info("ComfyUI is running at %s (drag workflows/text_to_video.json onto the page). Ctrl-C stops it.", url)
            process.wait()
            return
        try:
            prompt_id = request(f"{url}/prompt", {"prompt": workflow})["prompt_id"]
        except urllib.error.HTTPError as e:
            sys.exit(f"ComfyUI refused the workflow: {e.read().decode(errors='replace')}")
        log.info("Queued %s on %s", prompt_id, checkpoint)
        deadline = time.time() + RUN_TIMEOUT_S
        while True:
            if process.poll() is not None:
                sys.exit(f"ComfyUI stopped during the run; see {args.home / 'comfyui.log'}")
            if time.time() > deadline:
                sys.exit(f"The run did not finish within {RUN_TIMEOUT_S // 3600} hours")
            history = request(f"{url}/history/{prompt_id}").get(prompt_id)
            if history and history["status"]["status_str"] in ("success", "error"):
                break
            time.sleep(1)
        if history["status"]["status_str"] != "success":
            errors = [m[1].get("exception_message") for m in history["status"]["messages"] if m[0] == "execution_error"]
            sys.exit(f"The workflow failed: {errors}")
        item = history["outputs"]["7"]["images"][0]
        print(args.home / "output" / item["subfolder"] / item["filename"])
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
