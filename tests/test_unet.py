"""UNet3D parity with diffusers' UNet3DConditionModel and with the original ModelScope UNetSD.

Tolerance: fp32 max abs error <= 1e-4 (outputs are O(1); the implementations differ only in the order of
floating-point operations).
"""
import pytest
import torch

import t2v_core
import tiny
from t2v_core.unet3d import UNet3DConfig

TOL = 1e-4


def inputs(cfg, batch=2, frames=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, cfg.in_channels, frames, size, size, generator=g)
    context = torch.randn(batch, 7, cfg.context_dim, generator=g)
    return latents, torch.tensor([999, 37][:batch]), context


def test_unet_matches_diffusers(checkpoints):
    from diffusers import UNet3DConditionModel

    ref = UNet3DConditionModel.from_pretrained(checkpoints["diffusers"] / "unet").eval()
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    latents, timesteps, context = inputs(pipe.unet.config)
    with torch.no_grad():
        expected = ref(latents, timesteps, context).sample
        got = pipe.unet(latents, timesteps, context)
    assert got.shape == latents.shape
    assert (got - expected).abs().max().item() <= TOL
    assert expected.abs().mean() > 0.1  # a real signal, not a near-zero output


@pytest.mark.parametrize("layers, attention", [(1, [1]), (2, [1, 0.5])])
def test_unet_matches_original_unetsd(layers, attention, tmp_path):
    """UNetSD hard-codes the decoder's context width at 1024, so this tiny config uses 1024-wide context."""
    from modelscope.models.multi_modal.video_synthesis.unet_sd import UNetSD

    levels = (1, 2, 2)[: len(attention) + 1]
    cfg = UNet3DConfig(block_out_channels=tuple(32 * m for m in levels), layers_per_block=layers,
                       cross_attention=tuple(i < len(attention) for i in range(len(levels))), context_dim=1024,
                       head_dim=8, transformer_in_heads=8)
    ours = tiny.unet(cfg, seed=5)
    torch.save(tiny.unet_original_state(ours), tmp_path / "text2video_pytorch_model.pth")
    ref = UNetSD(in_dim=4, dim=32, y_dim=768, context_dim=1024, out_dim=4, dim_mult=list(levels), num_heads=8,
                 head_dim=8, num_res_blocks=layers, attn_scales=attention, dropout=0.1, temporal_attention=True).eval()
    ref.load_state_dict(torch.load(tmp_path / "text2video_pytorch_model.pth"), strict=True)

    loaded = t2v_core.load_unet(tmp_path / "text2video_pytorch_model.pth", head_dim=8)
    assert loaded.config == cfg
    latents, timesteps, context = inputs(cfg, frames=4, size=8)
    with torch.no_grad():
        expected = torch.cat([ref(latents[i:i + 1], timesteps[i:i + 1], context[i:i + 1]) for i in range(2)])
        got = loaded(latents, timesteps, context)
    assert (got - expected).abs().max().item() <= TOL
    assert expected.abs().mean() > 0.1


def test_unet_odd_latent_size_follows_skip_sizes(truth):
    """A latent side that does not halve evenly (e.g. 600 px / 8 = 75) upsamples to the skip's size, as diffusers."""
    unet = truth["unet"]
    latents, timesteps, context = inputs(unet.config, batch=1, frames=2, size=9)
    with torch.no_grad():
        assert unet(latents, timesteps, context).shape == latents.shape


def test_freeu_matches_diffusers(checkpoints):
    """t2v_core.freeu has diffusers' enable_freeu(s1, s2, b1, b2) meaning (the paper's SD 2.1 values)."""
    from diffusers import UNet3DConditionModel

    ref = UNet3DConditionModel.from_pretrained(checkpoints["diffusers"] / "unet").eval()
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    latents, timesteps, context = inputs(pipe.unet.config, size=16)
    factors = dict(s1=0.9, s2=0.2, b1=1.1, b2=1.2)
    ref.enable_freeu(**factors)
    with torch.no_grad():
        expected = ref(latents, timesteps, context).sample
        got = pipe.unet(latents, timesteps, context, patches=t2v_core.freeu(pipe.unet.config, **factors))
        plain = pipe.unet(latents, timesteps, context)
    assert (got - expected).abs().max().item() <= TOL
    assert (got - plain).abs().max().item() > 100 * TOL


def test_block_patches_see_every_skip_in_order():
    """Input patches run as each skip is kept, output patches as each is concatenated back, with running indices;
    patches that return what they got change nothing."""
    from t2v_core.patches import BlockPatches

    unet = tiny.unet()
    latents, timesteps, context = inputs(unet.config)
    pushed, popped = [], []

    def on_input(h, index):
        pushed.append((index, h.shape[1]))
        return h

    def on_output(h, skip, index):
        popped.append((index, skip.shape[1]))
        return h, skip

    with torch.no_grad():
        plain = unet(latents, timesteps, context)
        patched = unet(latents, timesteps, context, patches=BlockPatches((on_input,), (on_output,)))
    assert torch.equal(plain, patched)
    assert [i for i, _ in pushed] == list(range(len(pushed))) and [i for i, _ in popped] == list(range(len(pushed)))
    assert [c for _, c in popped] == [c for _, c in reversed(pushed)]  # last in, first out


def test_attention_patches_run_at_each_spatial_transformer_numbered_as_the_sd_unet():
    """An ``attention`` hook sees every spatial-transformer attention, self then cross, at the SD UNet's block
    numbers (input 1, 2, 4, 5, 7, 8; middle; output 3-11 for two layers per block and attention on three of four
    levels); one that runs the attention as given changes nothing; one that zeroes a cross-attention does."""
    from t2v_core.patches import BlockPatches

    cfg = UNet3DConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=2, context_dim=16, head_dim=8,
                       norm_groups=8)
    unet = tiny.randomize_(t2v_core.unet3d.UNet3D(cfg), seed=4)
    latents, timesteps, context = inputs(cfg)
    seen = []

    def record(site, kind, attn, x, context):
        seen.append((site.block, site.transformer_index, kind, site.original_shape, site.activations_shape[1:]))
        return attn(x, context)

    def mute_middle_cross(site, kind, attn, x, context):
        out = attn(x, context)
        return out * 0 if (site.block, kind) == (("middle", 0), "attn2") else out

    with torch.no_grad():
        plain = unet(latents, timesteps, context)
        same = unet(latents, timesteps, context, patches=BlockPatches(attention=record))
        muted = unet(latents, timesteps, context, patches=BlockPatches(attention=mute_middle_cross))
    blocks = [("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("middle", 0)] + [("output", i) for i in range(3, 12)]
    assert [s[0] for s in seen[::2]] == blocks and [s[0] for s in seen[1::2]] == blocks
    assert [s[2] for s in seen] == ["attn1", "attn2"] * len(blocks)
    assert [s[1] for s in seen[::2]] == list(range(len(blocks)))
    batch, _, frames, height, width = latents.shape
    assert {s[3] for s in seen} == {(batch * frames, 4, height, width)}
    assert (plain - same).abs().max().item() <= 1e-6
    assert (plain - muted).abs().max().item() > 1e-3
