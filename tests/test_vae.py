"""KL autoencoder parity with diffusers' AutoencoderKL and the original (LDM) autoencoder of the ModelScope package.

Tolerance: fp32 max abs error <= 1e-4 on outputs of order 1.
"""
import pytest
import torch

import t2v_core

TOL = 1e-4


@pytest.fixture(scope="module")
def original_vae(checkpoints):
    """The ModelScope package's own AutoencoderKL, loading VQGAN_autoencoder.pth with its own loader."""
    from modelscope.models.multi_modal.video_synthesis.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    return AutoencoderKL(ddconfig, 4, ckpt_path=str(checkpoints["original"] / "VQGAN_autoencoder.pth")).eval()


@pytest.fixture(scope="module")
def diffusers_vae(checkpoints):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(checkpoints["diffusers"] / "vae").eval()


def latents_and_video(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, 3, 4, 6, generator=g), torch.rand(1, 3, 32, 48, 3, generator=g)


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_decode_matches_references(layout, checkpoints, original_vae, diffusers_vae):
    pipe = t2v_core.load_pipeline(checkpoints[layout])
    latents, _ = latents_and_video()
    z = latents[0].permute(1, 0, 2, 3) / 0.18215  # [F, 4, h, w], unscaled
    with torch.no_grad():
        ref_original = original_vae.decode(z)
        ref_diffusers = diffusers_vae.decode(z).sample
        video = pipe.decode(latents)[0]  # [F, H, W, 3] in 0..1
    ours = video.permute(0, 3, 1, 2) * 2 - 1
    for ref in (ref_original, ref_diffusers):
        # our frames are clamped to the image range, as every pipeline's output is
        assert (ours - ref.clamp(-1, 1)).abs().max().item() <= 2 * TOL
    with torch.no_grad():
        raw = pipe.vae.decode(z)
    assert (raw - ref_original).abs().max().item() <= TOL
    assert (raw - ref_diffusers).abs().max().item() <= TOL
    assert ref_original.abs().mean() > 0.1


def test_encode_matches_references(checkpoints, original_vae, diffusers_vae):
    pipe = t2v_core.load_pipeline(checkpoints["original"])
    _, video = latents_and_video()
    images = video[0].permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        ours = pipe.encode(video)  # [1, 4, F, h, w], scaled
        ref_original = original_vae.encode(images).mean * 0.18215
        ref_diffusers = diffusers_vae.encode(images).latent_dist.mean * 0.18215
    ours = ours[0].permute(1, 0, 2, 3)
    assert (ours - ref_original).abs().max().item() <= TOL
    assert (ours - ref_diffusers).abs().max().item() <= TOL


def test_decode_chunks_do_not_change_frames(checkpoints):
    """The VAE is per frame, so chunking is exact up to batch-size-dependent kernel rounding (1e-5)."""
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    latents = torch.randn(2, 4, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    whole = pipe.decode(latents, frames_per_chunk=100)
    assert whole.shape == (2, 5, 32, 32, 3)
    for chunk in (1, 3):
        assert (pipe.decode(latents, frames_per_chunk=chunk) - whole).abs().max().item() <= 1e-5
