"""ModelScope text-to-video (arXiv 2308.06571) in plain PyTorch: the model, its checkpoint formats and samplers."""
from .checkpoint import CheckpointError
from .generate import generate, initial_noise, sample
from .lora import LoraError, apply_lora, match_lora, read_lora
from .loading import detect_format, load_pipeline, load_unet, load_vae, save_single_file
from .memory import NotEnoughMemory
from .patches import BlockPatches, freeu
from .pipeline import Pipeline
from .samplers import SAMPLERS
from .schedule import NoiseSchedule

__all__ = ["BlockPatches", "CheckpointError", "LoraError", "NoiseSchedule", "NotEnoughMemory", "Pipeline", "SAMPLERS",
           "apply_lora", "detect_format", "freeu", "generate", "initial_noise", "load_pipeline", "load_unet", "load_vae",
           "match_lora", "read_lora", "sample", "save_single_file"]
