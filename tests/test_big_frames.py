"""Big frames: the VAE in stripes (t2v_core.vae_stripes; the tiled option of the pack's Decode and Encode nodes)
gives the whole-frame result, on the tiny VAE and on the full-size architecture (GroupNorm of 32 groups over
128-512 channels, the middle block's attention)."""
import numpy as np
import pytest
import torch
from PIL import Image

import t2v_core
from helpers import frames, run_latent
from t2v_core.vae import AutoencoderKL, VAEConfig
from t2v_core.vae_stripes import decode_in_stripes, encode_in_stripes
from workflows import tiny_text_to_video


@pytest.mark.parametrize("rows", [1, 3, 7, 64])
def test_stripes_give_the_whole_frame_result(checkpoints, rows):
    """fp32, tolerance 1e-5 on frames in 0..1 (only the GroupNorm sums are added in another order)."""
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    g = torch.Generator().manual_seed(0)
    latents, video = torch.randn(1, 4, 2, 5, 3, generator=g), torch.rand(1, 2, 40, 24, 3, generator=g)
    whole = pipe.decode(latents)
    assert (pipe.decode(latents, stripe_rows=rows) - whole).abs().max().item() <= 1e-5
    assert (pipe.encode(video, stripe_rows=rows) - pipe.encode(video)).abs().max().item() <= 1e-5


def test_stripes_on_the_full_size_vae():
    """The published VAE's layout (random weights), a 64x48 frame in stripes of 8 rows: decode and encode within
    1e-4 of the whole frame (outputs of order 1)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig()).eval()
    g = torch.Generator().manual_seed(1)
    z, images = torch.randn(1, 4, 8, 6, generator=g), torch.rand(1, 3, 64, 48, generator=g) * 2 - 1
    with torch.no_grad():
        decoded, encoded = vae.decode(z), vae.encode(images)
        assert (decode_in_stripes(vae, z, 8, "cpu") - decoded).abs().max().item() <= 1e-4
        assert (encode_in_stripes(vae, images, 8, "cpu") - encoded).abs().max().item() <= 1e-4
    assert decoded.abs().mean() > 0.1 and encoded.abs().mean() > 0.1


def test_bad_stripe_rows_are_refused(checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    with pytest.raises(ValueError, match="stripe rows must be at least 1, got 0"):
        pipe.decode(torch.zeros(1, 4, 1, 4, 4), stripe_rows=0)


def decode_graph(tiled):
    prompt, _ = tiny_text_to_video(width=48, height=32, length=3, steps=2, seed=11)
    prompt["6"]["inputs"]["tiled"] = tiled
    return prompt


def test_tiled_decode_and_encode_nodes_give_the_untiled_frames(comfy):
    """Decode with tiled on equals tiled off within 1/255 (one 8-bit step of rounding); Encode with tiled on gives
    the untiled latents within 1e-5."""
    whole, tiled = frames(comfy, decode_graph(False)), frames(comfy, decode_graph(True))
    assert np.abs(whole - tiled).max() <= 1 and whole.std() > 2
    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(comfy.base / "input" / "big.png")
    latents = {}
    for tiled_encode in (False, True):
        prompt = {"1": {"class_type": "ModelScopeT2VCheckpointLoader", "inputs": {"ckpt_name": "tiny-t2v"}},
                  "2": {"class_type": "LoadImage", "inputs": {"image": "big.png"}},
                  "3": {"class_type": "ModelScopeT2VEncode",
                        "inputs": {"vae": ["1", 2], "images": ["2", 0], "tiled": tiled_encode}},
                  "62": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "big/latent"}}}
        latents[tiled_encode] = run_latent(comfy, prompt)
    assert (latents[True] - latents[False]).abs().max().item() <= 1e-5
