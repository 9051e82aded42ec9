"""Memory behaviour that the maths allows: chunked layers are exact, activations grow linearly with frames,
long clips run, and the opt-in sliding window blends windows with weights that sum to one."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import t2v_core
from t2v_core.generate import context_windows

TOL = 1e-5  # chunks change only how many rows each matrix multiply sees


def test_chunked_transformers_equal_unchunked(truth):
    unet = truth["unet"]
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 4, 6, 8, 8, generator=g), torch.randn(2, 7, 128, generator=g)
    t = torch.tensor([500, 20])
    with torch.no_grad():
        unet.set_chunk_tokens(None)
        whole = unet(x, t, c)
        unet.set_chunk_tokens(70)  # one frame of 64 tokens, or 11 pixels x 6 frames, per chunk
        chunked = unet(x, t, c)
        unet.set_chunk_tokens(t2v_core.unet3d.CHUNK_TOKENS)
    assert (whole - chunked).abs().max().item() <= TOL


def peak_activation_bytes(frames):
    """Peak RSS growth of one forward of a tiny UNet at 64x64 latents, in a fresh process whose allocator maps
    every large block on its own and returns it when freed, so that RSS follows the live tensors."""
    script = textwrap.dedent(f"""
        import json, torch, tiny
        torch.set_num_threads(1)
        unet = tiny.unet()
        unet.set_chunk_tokens(4096)
        x, c = torch.randn(1, 4, {frames}, 64, 64), torch.randn(1, 7, 128)
        def rss(field="VmRSS"):  # VmHWM: the peak of this process (ru_maxrss would include the parent's at fork)
            return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024
        with torch.no_grad():
            unet(x[:, :, :1], torch.tensor([1]), c)  # warm up allocators and kernels
            before = rss()
            unet(x, torch.tensor([500]), c)
        print(json.dumps(rss("VmHWM") - before))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": ":".join(sys.path), "MALLOC_MMAP_THRESHOLD_": "65536",
                                 "MALLOC_TRIM_THRESHOLD_": "65536"})
    return json.loads(result.stdout.split()[-1])


def test_activation_memory_grows_linearly_with_frames():
    one, two = peak_activation_bytes(8), peak_activation_bytes(16)
    assert one > 20e6, one  # activations, not noise, are measured
    assert two <= 2.2 * one, f"8 frames: {one / 1e6:.0f} MB, 16 frames: {two / 1e6:.0f} MB"


def test_two_hundred_frames_in_one_pass(truth):
    unet = truth["unet"]
    x = torch.randn(1, 4, 200, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eps = unet(x, torch.tensor([500]), torch.randn(1, 7, 128))
    assert eps.shape == x.shape and torch.isfinite(eps).all()


@pytest.mark.parametrize("frames, window, overlap", [(20, 8, 4), (23, 8, 3), (16, 8, 0), (10, 16, 2)])
def test_context_window_weights_cover_every_frame_once(frames, window, overlap):
    total = torch.zeros(frames)
    for start, end, weight in context_windows(frames, window, overlap):
        assert end - start == min(window, frames)
        total[start:end] += weight
    assert torch.allclose(total, torch.ones(frames))


def test_sliding_window_is_opt_in(checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    args = dict(num_frames=10, height=32, width=32, steps=2, seed=4)
    plain = t2v_core.generate(pipe, "a cat", **args)
    assert torch.equal(t2v_core.generate(pipe, "a cat", context_frames=16, **args), plain)  # window covers the clip
    windowed = t2v_core.generate(pipe, "a cat", context_frames=6, context_overlap=2, **args)
    assert windowed.shape == plain.shape and torch.isfinite(windowed).all()
    assert (windowed - plain).abs().max() > 1e-3  # an approximation, not the same maths
    with pytest.raises(ValueError, match="context_overlap must be in"):
        t2v_core.generate(pipe, "a cat", context_frames=6, context_overlap=6, **args)
