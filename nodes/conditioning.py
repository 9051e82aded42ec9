"""Text encode node."""
from comfy_api.latest import io

from .loader import CATEGORY
from .types import T2VClip


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VTextEncode",
            display_name="ModelScope Text-to-Video Text Encode",
            category=CATEGORY,
            description="Encodes a prompt with the OpenCLIP text encoder (77 tokens; longer prompts are cut).",
            inputs=[
                T2VClip.Input("clip", tooltip="The text encoder from the ModelScope T2V checkpoint loader."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="What the video shows (positive), or what to steer away from (negative). "
                                        "English; at most 75 tokens are used."),
            ],
            outputs=[io.Conditioning.Output(tooltip="[1, 77, 1024] text context.")],
        )

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        return io.NodeOutput([[clip.encode(text), {}]])
