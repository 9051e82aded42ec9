"""Shared pieces of the benchmarks: full-size random models, timing of alternating pairs, FLOP counting."""
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from t2v_core import keymaps, ops
from t2v_core.components import assign_weights
from t2v_core.unet3d import UNet3D, UNet3DConfig

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


def alternate(fns, pairs, device="cpu"):
    """Run each function once as warm-up, then ``pairs`` rounds in turn; median seconds per function."""
    times = {name: [] for name in fns}
    for fn in fns.values():
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
