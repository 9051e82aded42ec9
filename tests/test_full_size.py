"""One forward of the full 1.7B-layout UNet (random weights) against diffusers.

Tolerance 1e-3: 1.4 B parameters and ~60 sequential blocks accumulate float32 rounding that differs between two
correct implementations (the two references differ from each other by 2.4e-5 at this size; outputs are O(1)).
"""
import time

import pytest
import torch

from t2v_core.components import build_unet
import tiny


@pytest.mark.slow
def test_full_size_unet_forward_matches_diffusers():
    from diffusers import UNet3DConditionModel

    torch.manual_seed(0)
    start = time.time()
    with torch.device("meta"):
        ref = UNet3DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3, layers_per_block=2,
            cross_attention_dim=1024, attention_head_dim=64)
    ref = tiny.randomize_(ref.to_empty(device="cpu"), seed=0)
    unet = build_unet(ref.state_dict(), "diffusers", "diffusers UNet", torch.float32, head_dim=64)  # shares the tensors
    assert sum(p.numel() for p in unet.parameters()) == 1_411_233_860

    g = torch.Generator().manual_seed(1)
    latents, context = torch.randn(1, 4, 2, 32, 32, generator=g), torch.randn(1, 77, 1024, generator=g)
    timesteps = torch.tensor([501])
    with torch.no_grad():
        expected = ref(latents, timesteps, context).sample
        got = unet(latents, timesteps, context)
    error = (got - expected).abs().max().item()
    print(f"full-size UNet: max abs error {error:.2e}, mean |eps| {expected.abs().mean():.3f}, {time.time() - start:.0f} s")
    assert error <= 1e-3
    assert expected.abs().mean() > 0.1
