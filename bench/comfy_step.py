"""One UNet step three ways on the same full-size weights, side by side: the pack's MODEL in ComfyUI (core's
``calc_cond_batch`` on the pack loader's MODEL, cond and uncond in one batch, as core's samplers call it), t2v_core's
own UNet, and diffusers' UNet3DConditionModel.

    .venv/bin/python bench/comfy_step.py [--files fp32 fp16] [--pairs 3] [--frames 4] [--threads 2]
                                         [--comfyui build/ComfyUI-current] [--cache build/bench]

Random weights written by diffusers as the published folder's ``unet/`` holds them (the fp32 file and the
``.fp16.`` one), each loaded from the file by all three, fp32 compute. B2 (CFG's cond and uncond) x F4 x 32x32
latents (256x256 video), t = 500. ComfyUI (0.33.0 by default) runs in a worker process of its own interpreter, which
need not have diffusers; the three steps take turns, one running at a time, and each figure is the median of
``--pairs`` rounds after a warm-up. Ratios below 1 favour the first named.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"fp32": None, "fp16": "fp16"}
TIMESTEP = 500


def inputs(frames, seed=0):
    """The UNet's input latents [1, 4, F, 32, 32] and the [positive, negative] contexts [2, 77, 1024]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, frames, 32, 32, generator=g), torch.randn(2, 77, 1024, generator=g)


def worker(comfyui, pack_name, unet_file, frames, threads):
    """The ComfyUI side: loads ``unet_file`` through the pack's loader and answers ``step`` (one calc_cond_batch)
    and ``eps PATH`` (the step's noise predictions [positive, negative], saved) on stdin, one JSON line each."""
    import torch

    from bench.common import pack_in_comfyui

    torch.set_num_threads(threads)
    module = pack_in_comfyui(comfyui, pack_name)
    import comfy.model_management as mm
    import comfy.sampler_helpers
    import comfy.samplers

    patcher = module("nodes.model").load_checkpoint(unet_file, "fp32").model
    mm.load_models_gpu([patcher])
    patcher.pre_run()  # what core's sampling does before its steps
    model = patcher.model
    latents, contexts = inputs(frames)
    sigma = model.model_sampling.sigma(torch.tensor([float(TIMESTEP)]))
    x = latents * (sigma ** 2 + 1) ** 0.5  # the sampler's x at sigma, whose scaled input is ``latents``
    conds = {name: comfy.sampler_helpers.convert_cond([[context[None], {}]])
             for name, context in zip(("positive", "negative"), contexts)}
    conds = comfy.samplers.process_conds(model, x, conds, mm.get_torch_device())

    def step():
        return comfy.samplers.calc_cond_batch(model, [conds["positive"], conds["negative"]], x, sigma,
                                              patcher.model_options)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        with torch.inference_mode():
            start = time.perf_counter()
            denoised = step()
            seconds = time.perf_counter() - start
        if command == "eps":
            torch.save(torch.cat([(x - d) / sigma for d in denoised]), rest[0])
        print(json.dumps({"seconds": seconds}), flush=True)


class Worker:
    """A worker process of ComfyUI's interpreter, driven over its stdin and stdout."""

    def __init__(self, args, unet_file):
        self.process = subprocess.Popen(
            [args.python, __file__, "--worker", str(args.comfyui), args.pack_name, str(unet_file), str(args.frames),
             str(args.threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        self.answer()

    def answer(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the ComfyUI worker ended (exit code {self.process.wait()}); its errors are above")
        return json.loads(line)

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.answer()

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def bench_file(args, variant_name):
    """Times and output differences of the three steps on the ``variant_name`` file."""
    import torch
    from diffusers import UNet3DConditionModel

    import t2v_core
    from bench.bench import unet_file_name, unet_folder
    from bench.common import alternate

    variant = VARIANTS[variant_name]
    folder = unet_folder(variant, args.cache)
    latents, contexts = inputs(args.frames)
    x, t = torch.cat([latents, latents]), torch.tensor([TIMESTEP, TIMESTEP])
    ours = t2v_core.load_unet(folder / unet_file_name(variant), head_dim=64)
    theirs = UNet3DConditionModel.from_pretrained(folder, variant=variant, torch_dtype=torch.float32).eval()
    comfy = Worker(args, folder / unet_file_name(variant))
    try:
        with torch.no_grad():
            times = alternate({"ComfyUI": lambda: comfy.ask("step"), "t2v_core": lambda: ours(x, t, contexts),
                               "diffusers": lambda: theirs(x, t, contexts)}, args.pairs)
            eps = {"t2v_core": ours(x, t, contexts), "diffusers": theirs(x, t, contexts).sample}
            with tempfile.TemporaryDirectory() as tmp:
                comfy.ask(f"eps {tmp}/eps.pt")
                eps["ComfyUI"] = torch.load(f"{tmp}/eps.pt")
    finally:
        comfy.close()
    diffs = {name: (eps[name] - eps["t2v_core"]).abs().max().item() for name in ("ComfyUI", "diffusers")}
    return times, diffs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--comfyui", type=Path, default=REPO / "build" / "ComfyUI-current")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "bench", help="where the UNet files are written")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO)]
    if args.worker:
        comfyui, pack_name, unet_file, frames, threads = args.worker
        return worker(Path(comfyui), pack_name, unet_file, int(frames), int(threads))
    sys.path.insert(0, str(REPO / "tests"))
    import torch
    from comfyui import PACK_NAME, version_of  # the tests' harness (not importable on ComfyUI's own interpreter)

    from bench.bench import machine
    from bench.common import table

    torch.set_num_threads(args.threads)
    python = args.comfyui / ".python"
    args.python = python.read_text().strip() if python.exists() else sys.executable
    args.pack_name = PACK_NAME
    print(f"UNet step in ComfyUI, t2v_core and diffusers, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
          f"{machine(argparse.Namespace(device='cpu'))}; ComfyUI {version_of(args.comfyui)}")
    rows = []
    for name in args.files:
        times, diffs = bench_file(args, name)
        rows.append([f"{name} file", *(f"{times[k]:.3f}" for k in ("ComfyUI", "t2v_core", "diffusers")),
                     f"{times['ComfyUI'] / times['t2v_core']:.3f}", f"{times['t2v_core'] / times['diffusers']:.3f}",
                     f"{diffs['ComfyUI']:.1e}", f"{diffs['diffusers']:.1e}"])
    table(f"UNet step, B2 (CFG) x F{args.frames} x 32x32 latent, fp32 compute, seconds (median of {args.pairs} "
          f"alternated rounds); max |eps - t2v_core's|",
          ["", "ComfyUI", "t2v_core", "diffusers", "ComfyUI/t2v_core", "t2v_core/diffusers", "ComfyUI diff",
           "diffusers diff"], rows)


if __name__ == "__main__":
    main()
