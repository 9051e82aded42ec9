"""Shared pieces of the benchmarks: full-size random models, timing of alternating pairs, FLOP counting, the pack
inside a ComfyUI tree."""
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from t2v_core import keymaps, ops
from t2v_core.components import assign_weights
from t2v_core.text_encoder import TextEncoder, TextEncoderConfig
from t2v_core.unet3d import UNet3D, UNet3DConfig
from t2v_core.vae import AutoencoderKL, VAEConfig

FULL_UNET = dict(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                 up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3, layers_per_block=2,
                 cross_attention_dim=1024, attention_head_dim=64)


def randomize_(module, seed=0):
    """Every parameter drawn (weights ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.01), biases ~ N(0, 0.01))."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if p.ndim <= 1:
                p.copy_(noise * 0.1 + (1 if "norm" in name and name.endswith("weight") else 0))
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return module.eval().requires_grad_(False)


def diffusers_unet(device="cpu", dtype=torch.float32):
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        unet = UNet3DConditionModel(**FULL_UNET)
    return randomize_(unet.to_empty(device="cpu")).to(device, dtype)


def our_unet_sharing(ref):
    """Our UNet holding the very tensors of a diffusers UNet (no second copy of the weights)."""
    with torch.device("meta"):
        unet = UNet3D(UNet3DConfig())
    dtype = next(ref.parameters()).dtype
    return assign_weights(unet, ref.state_dict(), keymaps.identity, "diffusers UNet", dtype).to(next(ref.parameters()).device)


def full_size_vae(device="cpu", dtype=torch.float32):
    """diffusers' AutoencoderKL with random weights and ours holding the same tensors: (theirs, ours)."""
    from diffusers import AutoencoderKL as RefVAE

    with torch.device("meta"):
        ref = RefVAE(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        vae = AutoencoderKL(VAEConfig())
    ref = randomize_(ref.to_empty(device="cpu")).to(device, dtype)
    return ref, assign_weights(vae, ref.state_dict(), keymaps.identity, "vae", dtype)


def full_size_text_encoder(device="cpu", dtype=torch.float32):
    """The 23-block ViT-H/14 text tower as transformers' CLIPTextModel with random weights, and ours holding the
    same tensors: (theirs, ours)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    ref = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                       num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu"))
    ref = randomize_(ref).to(device, dtype)
    with torch.device("meta"):
        ours = TextEncoder(TextEncoderConfig())
    return ref, assign_weights(ours, ref.state_dict(), keymaps.text_hf, "text encoder", dtype,
                               ignored=lambda k: "position_ids" in k)


def unet_flops(batch, frames, size=32):
    """FLOPs of one full-size UNet forward, counted on the meta device (no weights, no time)."""
    with torch.device("meta"):
        unet = UNet3D(UNet3DConfig())
        x = torch.empty(batch, 4, frames, size, size)
        t = torch.empty(batch, dtype=torch.long)
        c = torch.empty(batch, 77, 1024)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(x, t, c)
    return counter.get_total_flops()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternate(fns, pairs, device="cpu", warmup=True):
    """Run each function once as warm-up, then ``pairs`` rounds in turn; median seconds per function."""
    times = {name: [] for name in fns}
    for fn in fns.values() if warmup else ():
        fn()
    for _ in range(pairs):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def matmul_peaks(device="cpu", dtype=torch.float32, n=4096, repeats=5):
    """Measured dense matrix-multiply throughput (FLOP/s) of each GEMM path in play: torch.mm (MKL on CPU, cuBLAS
    on GPU), which diffusers' linear layers use, and oneDNN, which t2v_core's use on x86 CPUs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    fns = {"torch.mm": lambda: a @ b}
    if ops.use_onednn(a, b):
        fns["oneDNN"] = lambda: ops.linear(a, b)
    return {name: 2 * n ** 3 / s for name, s in alternate(fns, repeats, device).items()}


def peak_rss_gib():
    """This process's peak RSS. VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's RSS at fork."""
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 2 ** 20


def table(title, header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    print(f"\n{title}\n" + line(header) + "\n" + "  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def pack_in_comfyui(comfyui, pack_name):
    """This repository imported as the custom node pack ``pack_name`` of the ComfyUI tree ``comfyui`` on the CPU, as
    ComfyUI imports it; returns ``module(name)``, the pack's module ``name`` (e.g. "nodes.sampler")."""
    sys.path[:0] = [str(comfyui)]
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    custom_nodes = Path(tempfile.mkdtemp())
    (custom_nodes / pack_name).symlink_to(Path(__file__).resolve().parents[1])
    sys.path.insert(0, str(custom_nodes))
    return lambda name: importlib.import_module(f"{pack_name}.{name}")


def pack_model(module, unet):
    """``unet`` as the pack's MODEL (core's ModelPatcher over the pack's T2VModel, fp32 compute)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    t2v_core = module("t2v_core")
    t2v_model = module("nodes.model").T2VModel(unet, t2v_core.NoiseSchedule(), torch.float32,
                                                t2v_core.VAEConfig.scaling_factor, device=mm.get_torch_device())
    return comfy.model_patcher.ModelPatcher(t2v_model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())
