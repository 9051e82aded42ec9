"""ComfyUI nodes over t2v_core: one node per stage of the text-to-video pipeline."""
from comfy_api.latest import ComfyExtension, io

from . import lora, paths, patcher
from .conditioning import PromptSchedule, TextEncode
from .keyframes import Keyframes
from .latent import Decode, EmptyLatentVideo, Encode
from .loader import CheckpointLoader
from .sampler import Sampler
from .save import PreviewVideo, SaveVideo

NODES = [CheckpointLoader, TextEncode, EmptyLatentVideo, Sampler, Decode, Encode, SaveVideo, lora.LoraLoader, PromptSchedule,
         Keyframes, PreviewVideo]


class ModelScopeT2VExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> ComfyExtension:
    paths.register()
    patcher.register()
    return ModelScopeT2VExtension()
