"""Side-by-side benchmarks of t2v_core against diffusers on the same random full-size weights.

    .venv/bin/python bench/bench.py [--quick] [--device cuda] [--dtype fp16]

Every figure is measured in this one run, ours and diffusers' alternating, with the same inputs, dtype and
threads; ratios are ours / diffusers (below 1 is better). Peak memory is measured in separate processes.
"""
import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench.common import (alternate, diffusers_unet, full_size_text_encoder, full_size_vae, matmul_peaks,  # noqa: E402
                          our_unet_sharing, peak_rss_gib, sync, table, unet_flops)
from t2v_core import ops  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CACHE = Path(__file__).resolve().parents[1] / "build" / "bench"


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def machine(args):
    """The device, and for a CPU its kind: speed ratios hold for the CPU kind they were measured on."""
    if args.device == "cuda":
        return torch.cuda.get_device_name()
    info = open("/proc/cpuinfo").read().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "none of " + " ".join(ISA_FLAGS)
    gemm = "oneDNN" if ops.ONEDNN else "torch's default (MKL)"
    return (f"{cpu} ({isa}; torch CPU capability {ops.CPU_CAPABILITY}; our linear layers on {gemm}), "
            f"{torch.get_num_threads()} threads")


def bench_unet(args, peak):
    device, dtype = args.device, DTYPES[args.dtype]
    ref = diffusers_unet(device, dtype)
    ours = our_unet_sharing(ref)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, args.frames, 32, 32, generator=g).to(device, dtype)
    t = torch.tensor([500, 500], device=device)
    c = torch.randn(2, 77, 1024, generator=g).to(device, dtype)
    if args.compile:
        ours = torch.compile(ours)
        start = time.perf_counter()
        with torch.no_grad():
            ours(x, t, c)
        print(f"\ntorch.compile of our UNet: {time.perf_counter() - start:.0f} s for compiling and the first step")
    with torch.no_grad():
        diff = (ours(x, t, c).float() - ref(x, t, c).sample.float()).abs().max().item()
        times = alternate({"ours": lambda: ours(x, t, c), "diffusers": lambda: ref(x, t, c)}, args.pairs, device)
    flops = unet_flops(2, args.frames)
    rows = [[name, f"{s:.3f}", f"{flops / s / 1e12:.3f}", f"{flops / s / peak:.1%}"] for name, s in times.items()]
    table(f"UNet step, B2 (CFG) x F{args.frames} x 32x32 latent (256x256 video), {args.dtype}"
          f"{', ours compiled' if args.compile else ''}; "
          f"{flops / 1e12:.2f} TFLOP counted; max |ours - diffusers| = {diff:.1e}",
          ["", "seconds", "TFLOP/s", "of peak"], rows)
    print(f"ratio ours/diffusers: {times['ours'] / times['diffusers']:.3f}")
    return times


def bench_vae(args):
    from t2v_core.pipeline import Pipeline

    device, dtype = args.device, DTYPES[args.dtype]
    ref, vae = full_size_vae(device, dtype)
    pipe = Pipeline(torch.nn.Identity(), vae=vae, device=device, dtype=dtype)
    latents = torch.randn(1, 4, args.vae_frames, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)

    def theirs():  # TextToVideoSDPipeline.decode_latents: every frame in one batch
        z = latents[0].permute(1, 0, 2, 3).to(dtype) / 0.18215
        return ref.decode(z).sample

    with torch.no_grad():
        times = alternate({"ours": lambda: pipe.decode(latents), "diffusers": theirs}, args.pairs, device)
    table(f"VAE decode of {args.vae_frames} frames at 256x256, {args.dtype}", ["", "seconds"],
          [[k, f"{v:.3f}"] for k, v in times.items()])
    print(f"ratio ours/diffusers: {times['ours'] / times['diffusers']:.3f}")


def bench_text(args):
    from t2v_core.text_encoder import Tokenizer

    device, dtype = args.device, DTYPES[args.dtype]
    ref, ours = full_size_text_encoder(device, dtype)
    tokens = Tokenizer()(["a panda playing guitar on times square", ""]).to(device)
    with torch.no_grad():
        times = alternate({"ours": lambda: ours(tokens, dtype=dtype), "diffusers": lambda: ref(tokens)}, args.pairs * 3, device)
    table(f"Text encode of 2 prompts, {args.dtype}", ["", "seconds"], [[k, f"{v:.4f}"] for k, v in times.items()])
    print(f"ratio ours/diffusers: {times['ours'] / times['diffusers']:.3f}")


def bench_generate(args):
    """Prompt to frames: t2v_core.generate against TextToVideoSDPipeline, same weights, seed and DDIM steps."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline
    from transformers import CLIPTokenizer

    import t2v_core
    from t2v_core.pipeline import Pipeline
    from tiny import write_tokenizer

    device, dtype = args.device, DTYPES[args.dtype]
    ref_unet = diffusers_unet(device, dtype)
    ref_vae, vae = full_size_vae(device, dtype)
    ref_text, text_encoder = full_size_text_encoder(device, dtype)
    ours = Pipeline(our_unet_sharing(ref_unet), vae=vae, text_encoder=text_encoder, device=device, dtype=dtype)
    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer(folder)  # CLIP's BPE files, from open_clip's copy (nothing is downloaded)
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # the published model's scheduler_config.json
    ref = TextToVideoSDPipeline(vae=ref_vae, text_encoder=ref_text, tokenizer=tokenizer, unet=ref_unet, scheduler=scheduler)
    ref.set_progress_bar_config(disable=True)
    prompt, frames, steps = "a panda playing guitar on times square", args.frames, args.steps
    settings = dict(num_frames=frames, height=256, width=256, guidance_scale=9.0)
    videos = {}

    def run_ours():
        videos["ours"] = t2v_core.generate(ours, prompt, steps=steps, seed=0, **settings).numpy()

    def run_diffusers():
        videos["diffusers"] = ref(prompt, num_inference_steps=steps, output_type="np", **settings,
                                  generator=torch.Generator("cpu").manual_seed(0)).frames[0]

    times = alternate({"ours": run_ours, "diffusers": run_diffusers}, args.pairs - 1, device, warmup=False)
    diff = abs(videos["ours"] - videos["diffusers"]).max()
    table(f"generate: prompt to {frames} frames of 256x256, {steps} DDIM steps with CFG, {args.dtype} "
          f"(text encode, sampling, VAE decode); max |frames ours - diffusers| = {diff:.1e}",
          ["", "seconds"], [[k, f"{v:.2f}"] for k, v in times.items()])
    print(f"ratio ours/diffusers: {times['ours'] / times['diffusers']:.3f}")


def fp16_unet_file():
    """The full-size UNet as a diffusers ``.fp16.`` safetensors folder, written once (2.8 GB)."""
    folder = CACHE / "unet"
    if not (folder / "diffusion_pytorch_model.fp16.safetensors").exists():
        diffusers_unet().half().save_pretrained(folder, variant="fp16")
    return folder


WEIGHT_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def memory_child(which, folder, frames, device, dtype_name, out):
    """One process: load the .fp16. UNet, one B2 (CFG) forward in ``dtype_name`` on ``device``; print the peak
    memory: RSS on CPU, torch.cuda.max_memory_allocated on GPU (weights included in both). ``which``: "diffusers",
    "ours", or "ours:<weight dtype>" (the UNet's matrices stored in fp8)."""
    dtype = DTYPES[dtype_name]
    which, _, weight_dtype = which.partition(":")
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 4, frames, 32, 32, generator=g), torch.randn(2, 77, 1024, generator=g)
    x, c, t = x.to(device, dtype), c.to(device, dtype), torch.tensor([500, 500], device=device)
    with torch.no_grad():
        if which == "diffusers":
            from diffusers import UNet3DConditionModel

            unet = UNet3DConditionModel.from_pretrained(folder, variant="fp16", torch_dtype=dtype).to(device)
            y = unet(x, t, c).sample
        else:
            import t2v_core

            # The weights stay in their stored fp16 and are cast layer by layer when computing in another dtype.
            unet = t2v_core.load_unet(Path(folder) / "diffusion_pytorch_model.fp16.safetensors", head_dim=64,
                                      weight_dtype=WEIGHT_DTYPES.get(weight_dtype)).to(device)
            y = unet(x, t, c)
    torch.save(y.float().cpu(), out)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else peak_rss_gib()
    weights = sum(p.nbytes for p in unet.parameters()) / 2 ** 30
    print(json.dumps({"peak_gib": peak, "weights_gib": weights}))


def peak_memory(which, folder, frames, args, tmp):
    """(report, output) of ``memory_child`` in a fresh process (report: ``peak_gib``, ``weights_gib``), or
    (None, None) when it ran out of memory."""
    out = Path(tmp) / f"{which}-{frames}.pt"
    result = subprocess.run([sys.executable, __file__, "--child-memory", which, str(folder), str(frames), args.device,
                             args.dtype, str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        if "out of memory" in result.stderr.lower():
            return None, None
        raise RuntimeError(f"memory child {which} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1]), torch.load(out)


def bench_memory(args):
    """Peak memory of one CFG UNet step at the bench's frame count and, on GPU, at 200 frames."""
    folder = fp16_unet_file()
    kind = "peak RSS" if args.device == "cpu" else "peak VRAM"
    for frames in [args.frames] + ([200] if args.device == "cuda" else []):
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for which in ("ours", "diffusers"):
                results[which] = peak_memory(which, folder, frames, args, tmp)
        outputs = [out for _, out in results.values() if out is not None]
        diff = f"{(outputs[0] - outputs[1]).abs().max().item():.1e}" if len(outputs) == 2 else "n/a"
        rows = [[which, "out of memory" if report is None else f"{report['peak_gib']:.2f}"]
                for which, (report, _) in results.items()]
        table(f"{kind} (GiB), separate processes: load the .fp16. UNet for {args.dtype} compute, one B2 (CFG) x "
              f"F{frames} forward; max |ours - diffusers| = {diff}", ["", kind], rows)
        if all(report is not None for report, _ in results.values()):
            print(f"ratio ours/diffusers: {results['ours'][0]['peak_gib'] / results['diffusers'][0]['peak_gib']:.3f}")


def bench_fp8(args):
    """The loader's weight_dtype: peak memory of one CFG UNet step with the UNet's matrices stored in fp8 (and
    diffusers' from the same .fp16. file), and the output's drift from the 16-bit weights computed alike."""
    folder = fp16_unet_file()
    kind = "peak RSS" if args.device == "cpu" else "peak VRAM"
    with tempfile.TemporaryDirectory() as tmp:
        results = {which: peak_memory(which, folder, args.frames, args, tmp)
                   for which in ("diffusers", "ours", *(f"ours:{name}" for name in WEIGHT_DTYPES))}
    reference = results["ours"][1]
    scale = reference.pow(2).mean().sqrt().item()
    rows = []
    for which, (report, out) in results.items():
        drift = out - reference
        rows.append([which, f"{report['weights_gib']:.2f}", f"{report['peak_gib']:.2f}",
                     f"{drift.abs().max().item():.2e}",
                     f"{drift.pow(2).mean().sqrt().item() / scale:.2%}"])
    table(f"UNet weights and {kind} (GiB), drift, separate processes: the .fp16. UNet loaded as stored or with fp8 "
          f"matrices, {args.dtype} compute, one B2 (CFG) x F{args.frames} forward; drift against ours with the 16-bit "
          f"weights (output RMS {scale:.3f}; random weights)", ["", "weights", kind, "max |diff|", "RMS diff / RMS"],
          rows)
    ours, theirs = results["ours"][0], results["diffusers"][0]
    for which in WEIGHT_DTYPES:
        report, _ = results["ours:" + which]
        print(f"ours:{which}: weights {report['weights_gib'] / ours['weights_gib']:.3f}x ours 16-bit, "
              f"{report['weights_gib'] / theirs['weights_gib']:.3f}x diffusers'; "
              f"{kind} {report['peak_gib'] / theirs['peak_gib']:.3f}x diffusers'")


VAE_WAYS = ("ours", "ours, stripes", "diffusers", "diffusers, tiled")


def vae_child(which, height, width, device, dtype_name, out):
    """One process: the full-size VAE decodes one frame of [1, 4, height/8, width/8] latents ``which`` way; prints
    the time and the peak memory (RSS on CPU, torch.cuda.max_memory_allocated on GPU; weights included)."""
    from t2v_core.vae_stripes import decode_in_stripes

    dtype = DTYPES[dtype_name]
    ref, vae = full_size_vae(device, dtype)  # ours holds diffusers' tensors: one copy of the weights
    if which == "diffusers, tiled":  # SD's tile settings (512-pixel tiles, 1/4 overlap), as its VAE config sets
        ref.enable_tiling()
        ref.tile_sample_min_size, ref.tile_latent_min_size, ref.tile_overlap_factor = 512, 64, 0.25
    z = torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    decode = {"ours": lambda: vae.decode(z), "ours, stripes": lambda: decode_in_stripes(vae, z, 64, device),
              "diffusers": lambda: ref.decode(z).sample, "diffusers, tiled": lambda: ref.decode(z).sample}[which]
    with torch.no_grad():
        start = time.perf_counter()
        frame = decode()
        sync(device)
        seconds = time.perf_counter() - start
    torch.save(frame.float().cpu(), out)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else peak_rss_gib()
    print(json.dumps({"seconds": seconds, "peak_gib": peak}))


def bench_stripes(args):
    """Decoding one zeroscope XL frame (1024x576): whole, in stripes of 64 rows (the nodes' tiled), diffusers whole
    and with its tiling (tiles decoded apart, overlaps blended); each in a fresh process."""
    height, width = 576, 1024
    kind = "peak RSS" if args.device == "cpu" else "peak VRAM"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for which in VAE_WAYS:
            out = Path(tmp) / f"{len(results)}.pt"
            result = subprocess.run([sys.executable, __file__, "--child-vae", which, str(height), str(width),
                                     args.device, args.dtype, str(out)], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"VAE child {which} failed:\n{result.stderr[-2000:]}")
            results[which] = json.loads(result.stdout.splitlines()[-1]), torch.load(out)
    whole = results["ours"][1]
    rows = [[which, f"{report['seconds']:.2f}", f"{report['peak_gib']:.2f}",
             f"{(frame - whole).abs().max().item() * 127.5:.3f}"] for which, (report, frame) in results.items()]
    table(f"VAE decode of one {width}x{height} frame, {args.dtype}, separate processes ({kind} includes the "
          f"0.31 GiB of fp32 weights); difference from ours whole, in 8-bit steps", ["", "seconds", kind, "max diff /255"],
          rows)
    for ours, theirs in (("ours", "diffusers"), ("ours, stripes", "diffusers, tiled")):
        print(f"ratio {ours} / {theirs}: time {results[ours][0]['seconds'] / results[theirs][0]['seconds']:.3f}, "
              f"{kind} {results[ours][0]['peak_gib'] / results[theirs][0]['peak_gib']:.3f}")


def bench_preview(args, unet_seconds):
    """The live preview (latent->RGB strip + JPEG) against one UNet step, per sampling step."""
    import io

    from PIL import Image

    from t2v_core.preview import latent_strip

    latents = torch.randn(2, 4, 16, 32, 32)

    def render():
        Image.fromarray(latent_strip(latents).numpy()).save(io.BytesIO(), format="JPEG")

    seconds = alternate({"preview": render}, 5)["preview"]
    print(f"\nLive preview per step: {seconds * 1e3:.1f} ms = {seconds / unet_seconds:.2%} of one UNet step above")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats (under 5 minutes on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="default: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--frames", type=int, default=None, help="UNet frames (default: 16 on GPU, 4 on CPU, 2 quick)")
    parser.add_argument("--compile", action="store_true", help="time our UNet under torch.compile (compile time apart)")
    parser.add_argument("--steps", type=int, default=None, help="generate's DDIM steps (default: 50 on GPU, 5 on CPU, 2 quick)")
    parser.add_argument("--only", nargs="*", default=["unet", "vae", "text", "generate", "memory", "fp8", "stripes"],
                        choices=["unet", "vae", "text", "generate", "memory", "fp8", "stripes"])
    parser.add_argument("--child-memory", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--child-vae", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        which, folder, frames, device, dtype, out = args.child_memory
        return memory_child(which, folder, int(frames), device, dtype, out)
    if args.child_vae:
        which, height, width, device, dtype, out = args.child_vae
        return vae_child(which, int(height), int(width), device, dtype, out)
    cpu = args.device == "cpu"
    args.dtype = args.dtype or ("fp32" if cpu else "fp16")
    args.frames = args.frames or (16 if not cpu else 2 if args.quick else 4)
    args.steps = args.steps or (50 if not cpu else 2 if args.quick else 5)
    args.vae_frames = 4 if cpu and args.quick else 16
    args.pairs = 2 if args.quick else 3

    print(f"t2v_core benchmark, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {machine(args)}, "
          f"{args.device} {args.dtype}{', quick' if args.quick else ''}")
    peaks = matmul_peaks(args.device, DTYPES[args.dtype])
    peak = max(peaks.values())
    print(f"measured {args.dtype} matmul peak (4096^3): "
          + ", ".join(f"{name} {flops / 1e12:.3f} TFLOP/s" for name, flops in peaks.items())
          + ("; 'of peak' below is against the faster" if len(peaks) > 1 else ""))
    if "unet" in args.only:
        times = bench_unet(args, peak)
        bench_preview(args, times["ours"])
    if "vae" in args.only:
        bench_vae(args)
    if "text" in args.only:
        bench_text(args)
    if "generate" in args.only:
        bench_generate(args)
    if "memory" in args.only:
        bench_memory(args)
    if "fp8" in args.only:
        bench_fp8(args)
    if "stripes" in args.only:
        bench_stripes(args)


if __name__ == "__main__":
    main()
