"""CONDITIONING as core means it, in the pack's sampler: several entries (ConditioningCombine), timestep ranges,
strengths, averages and concatenations give core KSampler's frames with a core scheduler, and change the video on the
reference grid too (which then samples through ComfyUI's sampling)."""
import numpy as np
import pytest

from helpers import frames
from workflows import SAMPLER, core_graph, pack_graph

SECOND = "81"
GRAPHS = {
    "ConditioningCombine": {"90": ("ConditioningCombine", {"conditioning_1": ["2", 0], "conditioning_2": [SECOND, 0]})},
    "ConditioningSetTimestepRange": {
        # the second prompt on the first (high-noise) half of the steps, where the layout is decided
        "91": ("ConditioningSetTimestepRange", {"conditioning": [SECOND, 0], "start": 0.0, "end": 0.5}),
        "92": ("ConditioningSetTimestepRange", {"conditioning": ["2", 0], "start": 0.5, "end": 1.0}),
        "90": ("ConditioningCombine", {"conditioning_1": ["91", 0], "conditioning_2": ["92", 0]})},
    "ConditioningAverage": {"90": ("ConditioningAverage", {"conditioning_to": ["2", 0], "conditioning_from": [SECOND, 0],
                                                           "conditioning_to_strength": 0.3})},
    "ConditioningConcat": {"90": ("ConditioningConcat", {"conditioning_to": ["2", 0], "conditioning_from": [SECOND, 0]})},
    # strength weighs an entry against the others of a combined conditioning
    "ConditioningSetAreaStrength": {
        "91": ("ConditioningSetAreaStrength", {"conditioning": [SECOND, 0], "strength": 3.0}),
        "90": ("ConditioningCombine", {"conditioning_1": ["2", 0], "conditioning_2": ["91", 0]})},
}


def with_conditioning(prompt, sampler_id, kind):
    """``prompt`` with a second prompt and ``kind``'s nodes between the text encoders and the sampler's positive."""
    prompt[SECOND] = {"class_type": "ModelScopeT2VTextEncode", "inputs": {"clip": ["1", 1], "text": "a storm at sea"}}
    for node_id, (class_type, inputs) in GRAPHS[kind].items():
        prompt[node_id] = {"class_type": class_type, "inputs": dict(inputs)}
    prompt[sampler_id]["inputs"]["positive"] = ["90", 0]
    return prompt


@pytest.mark.parametrize("kind", sorted(GRAPHS))
def test_conditioning_nodes_sample_as_in_core_ksampler(comfy, kind):
    plain = frames(comfy, pack_graph(17, "euler", "karras"))
    ours = frames(comfy, with_conditioning(pack_graph(17, "euler", "karras"), SAMPLER, kind))
    core = frames(comfy, with_conditioning(core_graph(17, "euler", "karras"), "5", kind))
    assert np.abs(ours - plain).max() > 8, f"{kind} changed nothing"
    assert np.abs(ours - core).max() <= 2
    reference = frames(comfy, pack_graph(17, "ddim", "modelscope"))
    reference_kind = frames(comfy, with_conditioning(pack_graph(17, "ddim", "modelscope"), SAMPLER, kind))
    assert np.abs(reference_kind - reference).max() > 8


def test_a_timestep_range_over_all_steps_is_the_prompt_itself(comfy):
    """ConditioningSetTimestepRange 0-1 on the reference grid (through ComfyUI's sampling) gives the reference frames."""
    prompt = pack_graph(8, "ddim", "modelscope")
    prompt["91"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["2", 0], "start": 0.0,
                                                                              "end": 1.0}}
    prompt[SAMPLER]["inputs"]["positive"] = ["91", 0]
    assert np.abs(frames(comfy, prompt) - frames(comfy, pack_graph(8, "ddim", "modelscope"))).max() <= 2
