"""Few-step sampling and step caching on the full-size UNet, through the pack's Sampler node in ComfyUI.

    .venv/bin/python bench/few_steps.py [--size 16] [--frames 16] [--ddim-steps 50] [--comfyui build/ComfyUI-current]

- Time to one video: 4 lcm steps at cfg 1 (an MCM LoRA's setting) against the paper's 50 ddim steps at cfg 9 (cond
  and uncond each step), both on scheduler ``modelscope``, plus the VAE decode both need; the ratio of the two.
  ``--ddim-steps N`` times N of the 50 steps (every step of the grid costs the same UNet call) and counts 50.
- Core EasyCache and LazyCache on the MODEL (the pack's DIFFUSION_MODEL wrappers and core's predict-noise wrappers):
  speed-up of the sampler node and drift of the latents from the uncached run (max and mean abs difference, in
  units of the uncached latents' standard deviation), 10 ddim steps at cfg 9.

Random full-size weights (fp16 file, fp32 compute) and random 1024-wide contexts: a trained UNet's outputs change
more smoothly from step to step, so caches skip more steps on it; the skipping here is a lower bound. The sampling
runs in one process of the ComfyUI interpreter, the decode in this one (t2v_core's VAE, random full-size weights).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 0
CACHE_STEPS = 10


def sampler_runs(size, frames, comfyui, pack_name):
    """``run(model, steps, cfg, sampler_name) -> (seconds, latents)`` on the pack's Sampler node, and the MODEL."""
    import torch

    from bench.bench import fp16_unet_file
    from bench.common import pack_in_comfyui, pack_model

    module = pack_in_comfyui(comfyui, pack_name)
    sampler_node, t2v_core = module("nodes.sampler").Sampler, module("t2v_core")
    unet = t2v_core.load_unet(fp16_unet_file() / "diffusion_pytorch_model.fp16.safetensors", head_dim=64,
                              ops=module("nodes.layers").OPS)
    model = pack_model(module, unet)
    noise, _ = t2v_core.initial_noise(SEED, frames, size * 8, size * 8, 8)
    negative, positive = [[[c[None], {}]] for c in torch.randn(2, 77, 1024, generator=torch.Generator().manual_seed(1))]

    def run(patched, steps, cfg, sampler_name):
        latent = {"samples": noise, "t2v_noise": True}
        start = time.perf_counter()
        out = sampler_node.execute(patched, positive, negative, latent, steps, cfg, sampler_name, 1.0, seed=SEED)
        return time.perf_counter() - start, out.result[0]["samples"]

    return run, model


def child(size, frames, ddim_steps, comfyui, pack_name):
    import logging

    run, model = sampler_runs(size, frames, comfyui, pack_name)
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

    skipped = []
    logging.getLogger().setLevel(logging.INFO)  # core's caches report their skipped steps at INFO
    logging.getLogger().addHandler(type("Skips", (logging.Handler,), {
        "emit": lambda self, record: skipped.append(record.getMessage()) if "skipped" in record.getMessage() else None})())
    run(model, 1, 1.0, "ddim")  # warm-up
    report = {}
    for name, steps, cfg, sampler_name in (("lcm", 4, 1.0, "lcm"), ("ddim", ddim_steps, 9.0, "ddim")):
        report[name] = {"seconds": run(model, steps, cfg, sampler_name)[0] * (50 if name == "ddim" else steps) / steps}
        print(f"{name}: {report[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    plain_seconds, plain = run(model, CACHE_STEPS, 9.0, "ddim")
    report["cache"] = {"plain": plain_seconds}
    for name, node in (("EasyCache", EasyCacheNode), ("LazyCache", LazyCacheNode)):
        cached_model = node.execute(model, reuse_threshold=0.2, start_percent=0.15, end_percent=0.95,
                                    verbose=False).result[0]
        seconds, latents = run(cached_model, CACHE_STEPS, 9.0, "ddim")
        diff = (latents - plain).abs()
        report["cache"][name] = {"seconds": seconds, "max_drift": (diff.max() / plain.std()).item(),
                                 "mean_drift": (diff.mean() / plain.std()).item(),
                                 "log": skipped[-1] if skipped else "no skip report"}
        print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps(report))


def decode_seconds(size, frames):
    """t2v_core's VAE decode of one video, random full-size weights."""
    import torch

    from bench.common import full_size_vae

    _, vae = full_size_vae()
    latents = torch.randn(1, 4, frames, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        vae.decode(latents[:, :, :1].transpose(1, 2).flatten(0, 1))  # warm-up
        start = time.perf_counter()
        for f in range(0, frames, 4):
            vae.decode(latents[:, :, f:f + 4].transpose(1, 2).flatten(0, 1))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16, help="latent height and width (video: 8x)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--ddim-steps", type=int, default=50, help="ddim steps timed (counted as 50)")
    parser.add_argument("--comfyui", type=Path, default=REPO / "build" / "ComfyUI-current")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO)]
    if args.child:
        return child(args.size, args.frames, args.ddim_steps, args.comfyui, args.child)
    sys.path.insert(0, str(REPO / "tests"))
    import torch
    from comfyui import PACK_NAME, version_of

    from bench.bench import fp16_unet_file, machine

    fp16_unet_file()  # written here, where diffusers is installed
    python = (args.comfyui / ".python").read_text().strip() if (args.comfyui / ".python").exists() else sys.executable
    print(f"few steps and caches, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
          f"{machine(argparse.Namespace(device='cpu'))}; ComfyUI {version_of(args.comfyui)}")
    print(f"full-size UNet (random weights, fp16 file, fp32 compute), {args.frames} frames of "
          f"{args.size * 8}x{args.size * 8} ({args.size}x{args.size} latents)", flush=True)
    result = subprocess.run([python, __file__, "--size", str(args.size), "--frames", str(args.frames), "--ddim-steps", str(args.ddim_steps), "--comfyui",
                             str(args.comfyui), "--child", PACK_NAME], stdout=subprocess.PIPE, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"the sampling process failed ({result.returncode})")
    report = json.loads(result.stdout.splitlines()[-1])
    decode = decode_seconds(args.size, args.frames)
    lcm, ddim = (report[k]["seconds"] + decode for k in ("lcm", "ddim"))
    print(f"VAE decode of the video: {decode:.1f} s")
    print(f"one video, 4 lcm steps at cfg 1: {lcm:.1f} s ({report['lcm']['seconds']:.1f} s sampling); 50 ddim steps "
          f"at cfg 9 ({args.ddim_steps} timed): {ddim:.1f} s ({report['ddim']['seconds']:.1f} s sampling); lcm / ddim "
          f"= {lcm / ddim:.3f} ({ddim / lcm:.1f}x faster)")
    cache = report["cache"]
    for name in ("EasyCache", "LazyCache"):
        c = cache[name]
        print(f"{name} (threshold 0.2, 15-95 %), {CACHE_STEPS} ddim steps at cfg 9: {c['seconds']:.1f} s against "
              f"{cache['plain']:.1f} s = {cache['plain'] / c['seconds']:.2f}x speed-up; drift max "
              f"{c['max_drift']:.3f}, mean {c['mean_drift']:.4f} (x the latents' std); core's log: {c['log']}")


if __name__ == "__main__":
    main()
