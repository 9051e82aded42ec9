"""ModelScope text-to-video (arXiv 2308.06571) in plain PyTorch: the model, its checkpoint formats and samplers."""
from .checkpoint import PICKLE_SUFFIXES, CheckpointError, read_tensors
from .files import write_files
from .generate import generate, initial_noise, sample
from .lora import LoraError, apply_lora, match_lora, read_lora
from .loading import (FOLDER_MARKERS, detect_format, load_pipeline, load_text_encoder, load_unet, load_vae,
                      save_single_file)
from .memory import NotEnoughMemory, check_fits, sampling_bytes
from .patches import BlockPatches, freeu
from .pipeline import DTYPES, MissingComponent, Pipeline
from .preview import latent_strip
from .prompts import ScheduleError, encode_prompt_schedule, interpolate_contexts, parse_prompt_schedule
from .samplers import SAMPLERS, step_noise
from .schedule import NoiseSchedule, lcm_denoised, variance_preserving
from .settings import DEFAULT, SETTINGS
from .unet3d import UNet3DConfig
from .vae import VAEConfig
from .video import CODECS, CONTAINERS, FORMATS, VIDEO_CODECS, codec_error, to_uint8, write_video, write_videos

__all__ = ["BlockPatches", "CODECS", "CONTAINERS", "CheckpointError", "DEFAULT", "DTYPES", "FOLDER_MARKERS",
           "FORMATS", "LoraError", "MissingComponent", "NoiseSchedule", "NotEnoughMemory",
           "PICKLE_SUFFIXES", "Pipeline", "SAMPLERS", "SETTINGS", "ScheduleError",
           "UNet3DConfig", "VAEConfig", "VIDEO_CODECS", "apply_lora", "check_fits", "codec_error",
           "detect_format", "encode_prompt_schedule", "freeu", "generate", "initial_noise",
           "interpolate_contexts", "latent_strip", "lcm_denoised", "load_pipeline", "load_text_encoder",
           "load_unet", "load_vae", "match_lora", "parse_prompt_schedule", "read_lora", "read_tensors",
           "sample", "sampling_bytes", "save_single_file", "step_noise", "to_uint8", "variance_preserving",
           "write_files", "write_video", "write_videos"]
