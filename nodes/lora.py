"""The pack's LoRA Loader: a LoRA file on the pack's MODEL and CLIP as core's own patches, matched by t2v_core
(diffusers/PEFT, kohya and Stable LoRA names). Core's loaders reach the same matching through ``patcher``."""
import folder_paths
from comfy_api.latest import io

from .. import t2v_core
from .clip import require_t2v_clip
from .loader import CATEGORY
from .model import require_t2v_model
from .patcher import UNET_PREFIX, core_patches, warn_unmatched
from .validation import check_choices, require_finite


def patch(model, lora, strength_model, name, clip=None, strength_clip=0.0, text_handled=False):
    """A MODEL clone carrying ``lora``'s UNet part, a CLIP clone carrying its text part (None without ``clip``),
    and t2v_core's match. ``text_handled``: a core CLIP takes the text part instead."""
    require_finite(strength_model=strength_model, strength_clip=strength_clip)
    found = t2v_core.match_lora(lora, model.model.diffusion_model.unet,
                                clip.pipe.text_encoder if clip is not None else None, source=name)
    new_model = model.clone()
    new_model.add_patches(core_patches(found.of("unet"), UNET_PREFIX), strength_model)
    new_clip = None
    if clip is not None:
        new_clip = clip.clone()
        new_clip.patcher.add_patches(core_patches(found.of("text_encoder")), strength_clip)
    warn_unmatched(found, name, text_handled or clip is not None)
    return new_model, new_clip, found


class LoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VLoraLoader",
            display_name="ModelScope Text-to-Video LoRA Loader",
            category=CATEGORY,
            description="Applies a LoRA from models/loras to the UNet and the text encoder: diffusers/PEFT and kohya "
                        "files, and Stable LoRA files (Text-To-Video-Finetuning, the A1111 text2video extension). "
                        "Core's LoraLoaderModelOnly applies the UNet part alone.",
            inputs=[
                io.Model.Input("model", tooltip="The UNet from the ModelScope T2V checkpoint loader."),
                io.Clip.Input("clip", tooltip="The text encoder from the ModelScope T2V checkpoint loader."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A LoRA file in models/loras."),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly the UNet is changed; 0 leaves it as it is, negative inverts."),
                io.Float.Input("strength_clip", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly the text encoder is changed."),
            ],
            outputs=[io.Model.Output(tooltip="The UNet with the LoRA."),
                     io.Clip.Output(tooltip="The text encoder with the LoRA (unchanged if the file has no part for it).")],
        )

    @classmethod
    def validate_inputs(cls, lora_name):
        return check_choices(lora_name=(lora_name, folder_paths.get_filename_list("loras")))

    @classmethod
    def execute(cls, model, clip, lora_name, strength_model, strength_clip) -> io.NodeOutput:
        require_t2v_model(model)
        require_t2v_clip(clip)
        lora = t2v_core.read_lora(folder_paths.get_full_path_or_raise("loras", lora_name))
        new_model, new_clip, _ = patch(model, lora, strength_model, lora_name, clip, strength_clip)
        return io.NodeOutput(new_model, new_clip)
