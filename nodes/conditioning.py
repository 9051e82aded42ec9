"""Text encode nodes: one prompt, or prompts per frame."""
from comfy_api.latest import io

from .. import t2v_core
from .loader import CATEGORY
from .clip import require_t2v_clip
from .settings import limits
from .types import FRAMES


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VTextEncode",
            display_name="ModelScope Text-to-Video Text Encode",
            category=CATEGORY,
            description="Encodes a prompt with the OpenCLIP text encoder, in ComfyUI's prompt syntax: (word:1.3) "
                        "weights, embedding:name, prompts of any length in 77-token chunks, as core CLIPTextEncode.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder from the ModelScope T2V checkpoint loader."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="What the video shows (positive), or what to steer away from (negative), in "
                                        "English. (word:1.3) weighs a part, (word) is 1.1, \\( a literal bracket; "
                                        "embedding:name reads models/embeddings."),
            ],
            outputs=[io.Conditioning.Output(tooltip="[1, 77 x chunks, 1024] text context.")],
        )

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        clip = require_t2v_clip(clip)
        return io.NodeOutput(clip.encode_from_tokens_scheduled(clip.tokenize(text)))  # as core CLIPTextEncode


class PromptSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VPromptSchedule",
            display_name="ModelScope Text-to-Video Prompt Schedule",
            category=CATEGORY,
            description="Prompts per frame: one 'FRAME: prompt' per line. Each frame reads its keyframe's text, and "
                        "the frames between two keyframes a blend of both, while the temporal layers keep the "
                        "motion coherent.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder from the ModelScope T2V checkpoint loader."),
                io.String.Input("text", multiline=True, default="0: a calm sea\n-1: a storm at sea",
                                tooltip="One keyframe per line, 'FRAME: prompt' (frames from 0; -1 is the last). "
                                        "Frames before the first keyframe read its prompt, after the last likewise."),
                io.Int.Input("length", **limits("num_frames"),
                             tooltip="Frames of the clip: the latent's length (ModelScope T2V Noise Video)."),
            ],
            outputs=[io.Conditioning.Output(tooltip="A context per frame, [1, length x 77 x chunks, 1024]; for "
                                                    "the ModelScope T2V sampler or core KSampler.")],
        )

    @classmethod
    def execute(cls, clip, text, length) -> io.NodeOutput:
        clip = require_t2v_clip(clip)
        try:
            context = t2v_core.encode_prompt_schedule(clip.encode, text, length)  # [1, F, 77, D]
        except t2v_core.ScheduleError as error:
            raise ValueError(f"text: {error}") from None
        return io.NodeOutput([[context.flatten(1, 2), {FRAMES: length}]])  # tokens of all frames in a row
