"""Long clips in windows: the full-size UNet at 32, 96 and 256 frames in context windows of 16 frames (overlap 4),
t2v_core's ``context_frames`` against core ComfyUI's context handler (ContextWindowsManual: standard_static,
overlap-linear) driving the pack's Sampler, side by side in one run.

    .venv/bin/python bench/long_clips.py [--size 16] [--frames 32 96 256] [--comfyui build/ComfyUI-current]

Each (implementation, length) runs in a fresh process, so its peak RSS (weights included) is its own. A run is one
CFG step (every window, cond and uncond; DDIM's single step, t = 1) from the same seeded noise, random full-size
weights, random 1024-wide contexts, CFG 9, timed after a one-window warm-up. The two implementations' latents are
compared relative to how far the step moved them from the noise. About 20 minutes on a 2-core AVX-512 CPU.
"""
import argparse
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WINDOW, OVERLAP, STEPS, CFG, SEED = 16, 4, 1, 9.0, 0


def inputs(t2v_core, frames, size):
    """The seeded noise video [1, 4, F, size, size] and [negative, prompt] contexts [2, 77, 1024]."""
    import torch

    noise, _ = t2v_core.initial_noise(SEED, frames, size * 8, size * 8, 8)
    context = torch.randn(2, 77, 1024, generator=torch.Generator().manual_seed(1))
    return noise, context


def load_unet(t2v_core, **kwargs):
    """The full-size UNet from the bench's .fp16. file (weights kept in fp16, computed in fp32)."""
    from bench.bench import fp16_unet_file

    return t2v_core.load_unet(fp16_unet_file() / "diffusion_pytorch_model.fp16.safetensors", head_dim=64, **kwargs)


def run_t2v_core(frames, size):
    import t2v_core

    unet, schedule = load_unet(t2v_core), t2v_core.NoiseSchedule()

    def run(frames):
        noise, context = inputs(t2v_core, frames, size)
        return noise, t2v_core.sample(unet, schedule, noise, context, steps=STEPS, guidance_scale=CFG, sampler="ddim",
                                      context_frames=WINDOW, context_overlap=OVERLAP)

    return run


def run_core(frames, size, comfyui, pack_name):
    """The pack's Sampler node (scheduler modelscope) on a MODEL patched by core's ContextWindowsManual: the path
    a ComfyUI user's workflow takes (the pack imported as ``pack_name``, as ComfyUI imports it)."""
    from bench.common import pack_in_comfyui, pack_model

    module = pack_in_comfyui(comfyui, pack_name)
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    sampler_module, t2v_core = module("nodes.sampler"), module("t2v_core")
    model = pack_model(module, load_unet(t2v_core, ops=module("nodes.layers").OPS))
    options = dict(context_length=WINDOW, context_overlap=OVERLAP, context_schedule="standard_static",
                   context_stride=1, closed_loop=False, fuse_method="overlap-linear", dim=2, freenoise=False,
                   causal_window_fix=False)
    accepted = inspect.signature(ContextWindowsManualNode.execute).parameters  # 0.3.75 has fewer inputs
    windowed = ContextWindowsManualNode.execute(model, **{k: v for k, v in options.items() if k in accepted}).result[0]

    def run(frames):
        noise, context = inputs(t2v_core, frames, size)
        negative, positive = [[[c[None], {}]] for c in context]
        latent = {"samples": noise, "t2v_noise": True}
        out = sampler_module.Sampler.execute(windowed, positive, negative, latent, STEPS, CFG, "ddim", 1.0, seed=SEED)
        return noise, model.model.process_latent_in(out.result[0]["samples"])  # the sampler's space, as t2v_core's

    return run


def child(which, frames, size, comfyui, pack_name, out):
    import torch

    from bench.common import peak_rss_gib

    run = run_t2v_core(frames, size) if which == "t2v_core" else run_core(frames, size, comfyui, pack_name)
    run(WINDOW)  # warm-up: one window
    start = time.perf_counter()
    noise, latents = run(frames)
    seconds = (time.perf_counter() - start) / STEPS
    torch.save({"noise": noise, "latents": latents.float()}, out)
    print(json.dumps({"seconds": seconds, "peak_gib": peak_rss_gib()}))


def measure(which, frames, args, tmp):
    out = Path(tmp) / f"{which}-{frames}.pt"
    python = sys.executable if which == "t2v_core" else args.python
    result = subprocess.run([python, __file__, "--child", which, str(frames), str(args.size), str(args.comfyui),
                             args.pack_name, str(out)], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{which} at {frames} frames failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1]), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16, help="latent height and width (video: 8x)")
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 96, 256])
    parser.add_argument("--comfyui", type=Path, default=REPO / "build" / "ComfyUI-current")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO)]
    if args.child:
        which, frames, size, comfyui, pack_name, out = args.child
        return child(which, int(frames), int(size), Path(comfyui), pack_name, out)
    sys.path.insert(0, str(REPO / "tests"))
    import torch
    from comfyui import PACK_NAME, version_of  # the tests' harness (not importable on ComfyUI's own interpreter)

    from bench.bench import machine

    args.python = (args.comfyui / ".python").read_text().strip() if (args.comfyui / ".python").exists() else sys.executable
    args.pack_name, version = PACK_NAME, version_of(args.comfyui)
    print(f"long clips, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
          f"{machine(argparse.Namespace(device='cpu'))}; ComfyUI {version}")
    print(f"full-size UNet (random weights, fp16 file, fp32 compute), {args.size * 8}x{args.size * 8} video "
          f"({args.size}x{args.size} latents), windows of {WINDOW} frames, overlap {OVERLAP}, CFG {CFG}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames:
            reports, outs = {}, {}
            for which in ("t2v_core", "core"):
                reports[which], path = measure(which, frames, args, tmp)
                outs[which] = torch.load(path)
            noise = outs["t2v_core"]["noise"]
            diff = (outs["t2v_core"]["latents"] - outs["core"]["latents"]).abs().max().item()
            moved = (outs["t2v_core"]["latents"] - noise).abs().max().item()
            rows.append((frames, reports))
            print(f"{frames:4d} frames: " + "; ".join(
                f"{which} {r['seconds']:.1f} s/step ({r['seconds'] / frames * 1e3:.0f} ms/frame), peak RSS "
                f"{r['peak_gib']:.2f} GiB" for which, r in reports.items())
                + f"; max |t2v_core - core| {diff:.1e} = {diff / moved:.1e} of the step's largest move", flush=True)
    first, last = rows[0], rows[-1]
    for which in ("t2v_core", "core"):
        per_frame = [r[which]["seconds"] / frames for frames, r in rows]
        mean = statistics.mean(per_frame)
        spread = max(abs(p / mean - 1) for p in per_frame)
        ratio = last[1][which]["peak_gib"] / first[1][which]["peak_gib"]
        print(f"{which}: peak RSS at {last[0]} frames {ratio:.3f}x that at {first[0]}; time per frame within "
              f"{spread:.0%} of its mean across the lengths")
    for frames, reports in rows:
        print(f"core / t2v_core at {frames} frames: time {reports['core']['seconds'] / reports['t2v_core']['seconds']:.3f}x, "
              f"peak RSS {reports['core']['peak_gib'] / reports['t2v_core']['peak_gib']:.3f}x")


if __name__ == "__main__":
    main()
