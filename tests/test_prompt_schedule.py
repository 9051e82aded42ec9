"""Prompts per frame in t2v_core: the schedule's syntax, the interpolated contexts, and the UNet reading a
context per frame."""
import pytest
import torch

import t2v_core
import tiny
from t2v_core.patches import BlockPatches


def test_schedule_lines_sorted_with_negative_frames_from_the_end():
    text = "12: a storm at sea\n\n 0 :  a calm sea \n-1: lightning"
    assert t2v_core.parse_prompt_schedule(text, 16) == [(0, "a calm sea"), (12, "a storm at sea"), (15, "lightning")]


@pytest.mark.parametrize("text, message", [
    ("0: a calm sea\nstorm", r"line 2: 'storm' is not 'FRAME: prompt'"),
    ("0: a\n16: b", r"line 2: frame 16 is past the clip's 16 frames"),
    ("0: a\n-17: b", r"line 2: frame -17 is past the clip's 16 frames"),
    ("3: a\n3: b", r"line 2: frame 3 already has a prompt \('a'\)"),
    ("  \n", "no keyframes"),
])
def test_bad_schedules_name_the_line(text, message):
    with pytest.raises(t2v_core.ScheduleError, match=message):
        t2v_core.parse_prompt_schedule(text, 16)


def test_keyframes_get_their_context_and_frames_between_the_interpolation():
    contexts = torch.randn(3, 5, 8)
    out = t2v_core.interpolate_contexts([2, 6, 7], contexts, 10)
    assert out.shape == (10, 5, 8)
    for frame, k in ((0, 0), (1, 0), (2, 0), (6, 1), (7, 2), (9, 2)):
        assert torch.equal(out[frame], contexts[k])
    assert torch.allclose(out[4], (contexts[0] + contexts[1]) / 2)
    assert torch.allclose(out[3], 0.75 * contexts[0] + 0.25 * contexts[1])


def test_unet_reads_each_frames_own_context():
    """At the UNet's cross-attention every frame sees its row of a [B, F, N, D] context; a context repeated over
    the frames is the single context."""
    unet = tiny.unet()
    cfg, frames = unet.config, 3
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, frames, 8, 8, generator=g)
    per_frame = torch.randn(2, frames, 7, cfg.context_dim, generator=g)
    seen = []

    def record(site, kind, attn, x, context):
        if kind == "attn2":
            seen.append(context)
        return attn(x, context)

    with torch.no_grad():
        unet(latents, torch.tensor([500, 500]), per_frame, patches=BlockPatches(attention=record))
        single = unet(latents, torch.tensor([500, 500]), per_frame[:, 0])
        repeated = unet(latents, torch.tensor([500, 500]), per_frame[:, :1].expand(-1, frames, -1, -1))
    assert seen and all(torch.equal(c, per_frame.reshape(2 * frames, 7, -1)) for c in seen)
    assert (single - repeated).abs().max().item() <= 1e-6


def test_generate_contexts_through_sample_with_a_schedule(checkpoints):
    """A schedule whose keyframes all hold one prompt samples as that prompt; two prompts change the video."""
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    noise, _ = t2v_core.initial_noise(1, 4, 32, 32, 8)

    def run(text):
        cond = t2v_core.encode_prompt_schedule(lambda p: pipe.encode_prompt([p]), text, 4)
        uncond = pipe.encode_prompt([""])[:, None].expand(-1, 4, -1, -1)
        return t2v_core.sample(pipe.unet, pipe.schedule, noise, torch.cat([uncond, cond]), steps=3)

    plain = t2v_core.sample(pipe.unet, pipe.schedule, noise, pipe.encode_prompt(["", "a calm sea"]), steps=3)
    assert (run("0: a calm sea\n3: a calm sea") - plain).abs().max().item() <= 1e-5
    assert (run("0: a calm sea\n3: a storm at sea") - plain).abs().max().item() > 1e-2


def test_prompts_of_different_lengths_are_refused():
    lengths = {"short": 77, "long": 154}
    with pytest.raises(t2v_core.ScheduleError, match=r"frame 3: 'long' encodes to 154 tokens, frame 0's prompt to 77"):
        t2v_core.encode_prompt_schedule(lambda p: torch.zeros(1, lengths[p], 8), "0: short\n3: long", 4)
