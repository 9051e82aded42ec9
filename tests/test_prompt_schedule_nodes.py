"""ModelScope T2V Prompt Schedule in ComfyUI: prompts per frame on both samplers, and its bad input."""
import numpy as np
import pytest

from helpers import frames, run_expecting_error
from workflows import LENGTH, SAMPLER, core_graph, pack_graph, tiny_text_to_video

SCHEDULE = "95"


def with_schedule(prompt, sampler_id, text, length=LENGTH):
    prompt[SCHEDULE] = {"class_type": "ModelScopeT2VPromptSchedule",
                        "inputs": {"clip": ["1", 1], "text": text, "length": length}}
    prompt[sampler_id]["inputs"]["positive"] = [SCHEDULE, 0]
    return prompt


@pytest.mark.parametrize("sampler_name, scheduler", [("ddim", "modelscope"), ("euler", "karras")])
def test_one_prompt_at_every_keyframe_is_that_prompt(comfy, sampler_name, scheduler):
    """The pack's graph prompts 'a panda playing guitar on times square'; a schedule holding only that gives its
    frames, on the reference grid and with a core scheduler."""
    text = "0: a panda playing guitar on times square\n-1: a panda playing guitar on times square"
    plain = frames(comfy, pack_graph(4, sampler_name, scheduler))
    scheduled = frames(comfy, with_schedule(pack_graph(4, sampler_name, scheduler), SAMPLER, text))
    assert np.abs(scheduled - plain).max() <= 2


def test_prompt_travel_changes_the_frames_and_matches_core_ksampler(comfy):
    text = "0: a panda playing guitar on times square\n5: a storm at sea"
    plain = frames(comfy, pack_graph(6, "euler", "karras"))
    ours = frames(comfy, with_schedule(pack_graph(6, "euler", "karras"), SAMPLER, text))
    core = frames(comfy, with_schedule(core_graph(6, "euler", "karras"), "5", text))
    reference = frames(comfy, with_schedule(pack_graph(6, "ddim", "modelscope"), SAMPLER, text))
    assert np.abs(ours - core).max() <= 2
    assert np.abs(ours[-1] - plain[-1]).max() > 8  # the last frame reads the second prompt
    assert np.abs(reference - frames(comfy, pack_graph(6, "ddim", "modelscope"))).max() > 8


@pytest.mark.parametrize("text, length, message", [
    ("0: a calm sea\nstorm", LENGTH, "text: line 2: 'storm' is not 'FRAME: prompt'"),
    ("0: a calm sea\n9: a storm", LENGTH, f"text: line 2: frame 9 is past the clip's {LENGTH} frames"),
    ("0: a calm sea", LENGTH + 2, f"positive: the prompt schedule is for {LENGTH + 2} frames, the latent has {LENGTH}"),
])
def test_bad_schedules_are_refused_naming_the_input(comfy, text, length, message):
    prompt = with_schedule(pack_graph(2, "ddim", "modelscope"), SAMPLER, text, length)
    assert message in run_expecting_error(comfy, prompt)


def test_prompt_travel_workflow_runs(comfy):
    """workflows/prompt_travel_api.json on the tiny checkpoint: its first and last frames read different prompts."""
    prompt, _ = tiny_text_to_video(width=32, height=32, length=4, steps=3, name="prompt_travel_api.json")
    got = frames(comfy, prompt)
    assert got.shape == (4, 32, 32, 3) and got.std() > 2


def test_schedules_of_different_prompt_lengths_keep_their_frames(comfy):
    """A negative schedule of a long (two-chunk) prompt beside a positive schedule: each frame still reads its own
    text (core does not batch the two into one padded context), so it equals the negative as a plain prompt."""
    long_negative = ", ".join(["blurry, low quality, watermark, text, distorted, ugly, deformed"] * 6)
    text = "0: a panda playing guitar on times square\n-1: a storm at sea"

    def graph(negative_as_schedule):
        prompt = with_schedule(pack_graph(7, "euler", "karras"), SAMPLER, text)
        if negative_as_schedule:
            prompt["96"] = {"class_type": "ModelScopeT2VPromptSchedule",
                            "inputs": {"clip": ["1", 1], "text": f"0: {long_negative}", "length": LENGTH}}
            prompt[SAMPLER]["inputs"]["negative"] = ["96", 0]
        else:
            prompt["3"]["inputs"]["text"] = long_negative
        return prompt

    assert np.abs(frames(comfy, graph(True)) - frames(comfy, graph(False))).max() <= 2
