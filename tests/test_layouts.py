"""The published checkpoints' full-size key sets and shapes, rebuilt from our modules on the meta device.

The key lists in tests/data/spec were dumped from the reference implementations (diffusers and the original
UNetSD / LDM autoencoder / OpenCLIP ViT-H-14) at the full 1.7B configuration.
"""
from functools import partial

import pytest
import torch

from helpers import read_keys
from t2v_core import keymaps
from t2v_core.components import file_layout
from t2v_core.text_encoder import TextEncoder, TextEncoderConfig
from t2v_core.unet3d import UNet3D, UNet3DConfig
from t2v_core.vae import AutoencoderKL, VAEConfig


def layout_keys(model, keymap, prefix=""):
    return {prefix + k: s for parts in file_layout(model, keymap).values() for k, s in parts}


@pytest.fixture(scope="module")
def full_size():
    with torch.device("meta"):
        return {"unet": UNet3D(UNet3DConfig()), "vae": AutoencoderKL(VAEConfig()), "text": TextEncoder(TextEncoderConfig())}


def assert_same_layout(ours, published):
    assert sorted(set(published) - set(ours)) == [], "keys the published file has and we do not build"
    assert sorted(set(ours) - set(published)) == [], "keys we build that the published file does not have"
    assert {k: s for k, s in ours.items() if published[k] != s} == {}, "shapes differ"


def test_full_size_parameter_count(full_size):
    assert sum(p.numel() for p in full_size["unet"].parameters()) == 1_411_233_860
    assert sum(p.numel() for p in full_size["vae"].parameters()) == 83_653_863
    assert sum(p.numel() for p in full_size["text"].parameters()) == 340_387_840


def test_unet_diffusers_layout(full_size):
    assert_same_layout(layout_keys(full_size["unet"], keymaps.identity), read_keys("unet_keys_diffusers.txt"))


def test_unet_original_layout(full_size):
    keymap = partial(keymaps.unet_original, layers_per_block=2, attention_levels=(True, True, True, False))
    assert_same_layout(layout_keys(full_size["unet"], keymap), read_keys("unet_keys_modelscope.txt"))


def test_vae_layouts(full_size):
    assert_same_layout(layout_keys(full_size["vae"], keymaps.identity), read_keys("vae_keys_diffusers.txt"))
    ldm = layout_keys(full_size["vae"], partial(keymaps.vae_ldm, levels=4), prefix="first_stage_model.")
    assert_same_layout(ldm, read_keys("vae_keys_modelscope_ldm.txt"))


def test_text_encoder_hf_layout(full_size):
    assert_same_layout(layout_keys(full_size["text"], keymaps.text_hf), read_keys("text_encoder_keys_hf.txt"))


def test_text_encoder_openclip_layout(full_size):
    """The OpenCLIP file holds the whole tower: ours is all of it but the last block and the projection."""
    ours = layout_keys(full_size["text"], keymaps.text_openclip)
    published = read_keys("text_encoder_keys_openclip.txt")
    unused = {k for k in published if k.startswith("transformer.resblocks.23.") or k in ("text_projection", "logit_scale")}
    assert len(unused) == 14
    assert_same_layout(ours, {k: s for k, s in published.items() if k not in unused})
