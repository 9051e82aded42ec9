"""Checkpoint loader node."""
import folder_paths
from comfy_api.latest import io

from . import paths
from .model import DTYPES, WEIGHT_DTYPES, load_checkpoint
from .validation import check_choices, require_choices

CATEGORY = "ModelScope T2V"
NO_VAE = NO_TEXT_ENCODER = "from checkpoint"
TEXT_ENCODERS = "text_encoders"


def text_encoder_options():
    return [NO_TEXT_ENCODER, *paths.weight_files(TEXT_ENCODERS)]


class CheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VCheckpointLoader",
            display_name="ModelScope Text-to-Video Checkpoint Loader (zeroscope)",
            category=CATEGORY,
            description="Loads a ModelScope text-to-video checkpoint (text-to-video-ms-1.7b, zeroscope v2) from "
                        "models/text2video: an original ModelScope folder, a diffusers folder or a single file; or "
                        "the published files one by one (UNet, text encoder in text_encoder_name, VAE in vae_name).",
            inputs=[
                io.Combo.Input("ckpt_name", options=paths.checkpoint_names(),
                               tooltip="A checkpoint folder (original ModelScope or diffusers layout, listed by folder "
                                       "name) or a single .safetensors/.pth file in models/text2video; or a UNet file "
                                       "alone (unet/diffusion_pytorch_model.fp16.safetensors, "
                                       "text2video_pytorch_model.pth, under any name), also from "
                                       "models/diffusion_models."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto", optional=True,
                               tooltip="Compute precision. auto: fp16 or bf16 on GPUs, fp32 on CPU. 16-bit weight files "
                                       "stay 16-bit in memory either way."),
                io.Combo.Input("vae_name", options=[NO_VAE, *folder_paths.get_filename_list("vae")], default=NO_VAE,
                               optional=True,
                               tooltip="A separate SD-2.x VAE from models/vae. Needed for zeroscope v2 folders, which "
                                       "ship without VQGAN_autoencoder.pth."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", optional=True,
                               tooltip="How the UNet's weights are stored. default: as the file has them. fp8_e4m3fn / "
                                       "fp8_e5m2: 8-bit matrices, about half the memory of fp16, computed in the "
                                       "compute dtype one layer at a time (slightly different videos)."),
                io.Combo.Input("text_encoder_name", options=text_encoder_options(), default=NO_TEXT_ENCODER,
                               optional=True,
                               tooltip="A separate text encoder from models/text_encoders, for a UNet file alone: "
                                       "text_encoder/model.fp16.safetensors (diffusers) or open_clip_pytorch_model.bin "
                                       "(original), under any name."),
            ],
            outputs=[
                io.Model.Output(tooltip="The spatio-temporal UNet."),
                io.Clip.Output(tooltip="The OpenCLIP ViT-H/14 text encoder, a core CLIP: the pack's Text Encode and "
                                       "core CLIPTextEncode, LoraLoader, CLIPSetLastLayer take it."),
                io.Vae.Output(tooltip="The KL autoencoder that turns latents into frames, a core VAE: the pack's "
                                      "Decode / Encode and core VAEDecode(Tiled) / VAEEncode(Tiled) take it."),
            ],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name):
        return check_choices(ckpt_name=(ckpt_name, paths.checkpoint_names()))

    @classmethod
    def fingerprint_inputs(cls, ckpt_name, vae_name=NO_VAE, text_encoder_name=NO_TEXT_ENCODER, **_):
        """When the chosen files last changed: ComfyUI's execution cache keeps the loaded checkpoint while the
        inputs and this stay the same, and loads it again once a file is overwritten in place."""
        files = [paths.resolve(ckpt_name)]
        if vae_name != NO_VAE:
            files.append(folder_paths.get_full_path_or_raise("vae", vae_name))
        if text_encoder_name != NO_TEXT_ENCODER:
            files.append(folder_paths.get_full_path_or_raise(TEXT_ENCODERS, text_encoder_name))
        return tuple(paths.modified(path) for path in files)

    @classmethod
    def execute(cls, ckpt_name, dtype="auto", vae_name=NO_VAE, weight_dtype="default",
                text_encoder_name=NO_TEXT_ENCODER) -> io.NodeOutput:
        require_choices(dtype=(dtype, ["auto", *DTYPES]), vae_name=(vae_name, [NO_VAE, *folder_paths.get_filename_list("vae")]),
                        weight_dtype=(weight_dtype, list(WEIGHT_DTYPES)),
                        text_encoder_name=(text_encoder_name, text_encoder_options()))
        vae_path = None if vae_name == NO_VAE else folder_paths.get_full_path_or_raise("vae", vae_name)
        text_path = (None if text_encoder_name == NO_TEXT_ENCODER
                     else folder_paths.get_full_path_or_raise(TEXT_ENCODERS, text_encoder_name))
        checkpoint = load_checkpoint(paths.resolve(ckpt_name), dtype, vae_path, weight_dtype, text_path)
        if checkpoint.vae is None:
            raise ValueError(f"ckpt_name: {ckpt_name} has no VAE; choose one in vae_name (an SD-2.x VAE in models/vae, "
                             f"e.g. VQGAN_autoencoder.pth from the ModelScope files)")
        if checkpoint.clip is None:
            raise ValueError(f"ckpt_name: {ckpt_name} has no text encoder (a UNet-only file); choose one in "
                             f"text_encoder_name (text_encoder/model.fp16.safetensors or open_clip_pytorch_model.bin "
                             f"in models/text_encoders), or use a checkpoint folder")
        return io.NodeOutput(checkpoint.model, checkpoint.clip, checkpoint.vae)
