"""The text tower at its penultimate block against OpenCLIP's own modules and against HF CLIPTextModel.

Tolerance: fp32 max abs error <= 1e-4.
"""
import logging

import torch

import t2v_core
from t2v_core.text_encoder import Tokenizer

TOL = 1e-4
PROMPTS = ["a panda playing guitar, on times square", ""]


def openclip_penultimate(clip, tokens):
    """What SD-2.x and ModelScope compute from an OpenCLIP model: all blocks but the last, then ln_final."""
    x = clip.token_embedding(tokens) + clip.positional_embedding
    if not clip.transformer.batch_first:
        x = x.permute(1, 0, 2)
    for block in clip.transformer.resblocks[:-1]:
        x = block(x, attn_mask=clip.attn_mask)
    if not clip.transformer.batch_first:
        x = x.permute(1, 0, 2)
    return clip.ln_final(x)


def test_matches_openclip_penultimate(checkpoints, truth):
    pipe = t2v_core.load_pipeline(checkpoints["original"])
    tokens = Tokenizer()(PROMPTS)
    with torch.no_grad():
        expected = openclip_penultimate(truth["clip"], tokens)
        got = pipe.encode_prompt(PROMPTS)
    assert got.shape == (2, 77, 128)
    assert (got - expected).abs().max().item() <= TOL


def test_matches_hf_clip_text_model(checkpoints):
    from transformers import CLIPTextModel

    ref = CLIPTextModel.from_pretrained(checkpoints["diffusers"] / "text_encoder").eval()
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    tokens = Tokenizer()(PROMPTS)
    with torch.no_grad():
        expected = ref(tokens).last_hidden_state
        got = pipe.encode_prompt(PROMPTS)
    assert (got - expected).abs().max().item() <= TOL


def test_tokenizer_matches_openclip_and_keeps_exclamation_marks():
    import open_clip

    tokens = Tokenizer()(["wow! a cat", ""])
    assert torch.equal(tokens, open_clip.tokenize(["wow! a cat", ""]))
    assert tokens[1, :3].tolist() == [49406, 49407, 0]
    assert 256 in tokens[0].tolist()  # "!" is a token, not the padding id 0


def test_long_prompt_is_truncated_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        tokens = Tokenizer()([" ".join(["panda"] * 500)])
    assert tokens.shape == (1, 77) and tokens[0, -1].item() == 49407
    assert "only the first 77 are used" in caplog.text
