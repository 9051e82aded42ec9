"""The loaded model: UNet, VAE and text encoder with their tokenizer and noise schedule, and what they do together."""
import torch
from einops import rearrange

from .checkpoint import CheckpointError
from .schedule import NoiseSchedule
from .text_encoder import Tokenizer
from .vae_stripes import decode_in_stripes, encode_in_stripes

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class MissingComponent(CheckpointError):
    """The checkpoint has no ``part`` ("vae" or "text_encoder"); ``ADVICE`` is the Python API's fix for each."""

    ADVICE = {"vae": "pass a separate VAE: load_pipeline(..., vae=PATH)",
              "text_encoder": "use a checkpoint folder that has one (open_clip_pytorch_model.bin or text_encoder/)"}

    def __init__(self, source, part):
        self.source, self.part = source, part
        super().__init__(self.with_advice(self.ADVICE[part]))

    def with_advice(self, advice):
        """The facts followed by ``advice``: what a front end's user can do."""
        return f"{self.source} has no {self.part.replace('_', ' ')}; {advice}"


def module_device(module):
    """Where ``module``'s weights are now (a host such as ComfyUI may move them between calls)."""
    return next(module.parameters()).device


class Pipeline:
    """``unet(latents, timesteps, context)``, ``encode_prompt``, ``decode`` and ``encode``.

    Each method computes in ``dtype`` wherever its network currently is. ``vae`` or ``text_encoder`` may be missing
    (a UNet-only checkpoint); the methods that need them then say so.
    """

    def __init__(self, unet, vae=None, text_encoder=None, schedule=NoiseSchedule(), device="cpu", dtype=torch.float32,
                 source="checkpoint"):
        self.dtype = dtype
        self.unet = unet.to(device)
        self.vae = vae.to(device) if vae is not None else None
        self.text_encoder = text_encoder.to(device) if text_encoder is not None else None
        self.tokenizer = Tokenizer(text_encoder.config.context_length) if text_encoder is not None else None
        self.schedule = schedule
        self.source = source

    @property
    def vae_scale_factor(self):
        """Pixels per latent cell along H and W: 2 ** (VAE levels - 1), 8 for every published checkpoint."""
        return self._require("vae").config.downsampling_factor

    def _require(self, part):
        module = getattr(self, part)
        if module is None:
            raise MissingComponent(self.source, part)
        return module

    @torch.no_grad()
    def encode_prompt(self, prompts):
        """[B] strings -> context [B, 77, D] in the pipeline's dtype."""
        text_encoder = self._require("text_encoder")
        tokens = self.tokenizer(list(prompts)).to(module_device(text_encoder))
        return text_encoder(tokens, dtype=self.dtype)

    @torch.no_grad()
    def encode_tokens(self, tokens, embeddings=(), device=None, layers=None):
        """Token ids [B, 77] -> context [B, 77, D] in the pipeline's dtype; ``embeddings``: (row, position, vector)
        triples put in place of those tokens' input embeddings (textual-inversion vectors). ``device``: where to
        compute, when a host keeps part of the weights elsewhere (default: where the weights are). ``layers``: read
        the context after that many blocks (default: the model's, the penultimate of the file's)."""
        text_encoder = self._require("text_encoder")
        device = device or module_device(text_encoder)
        return text_encoder(tokens.to(device), dtype=self.dtype, embeddings=embeddings, layers=layers)

    @torch.no_grad()
    def decode(self, latents, frames_per_chunk=4, progress=None, stripe_rows=None, device=None, scaled=True):
        """Sampler-space latents [B, C, F, h, w] -> video [B, F, H, W, 3] float32 in 0..1 on the CPU, a few frames
        at a time (device memory does not grow with length). ``progress(done, total)`` is called after each chunk.
        ``stripe_rows``: compute each frame in stripes of that many rows (``vae_stripes``: device memory does not
        grow with the frame either; the same frames). ``device``: where to compute (default: where the weights are).
        ``scaled=False``: the latents are the VAE's own, not multiplied by its ``scaling_factor`` (ComfyUI's LATENT).
        """
        vae = self._require("vae")
        device = device or module_device(vae)
        z = rearrange(latents, "b c f h w -> (b f) c h w")
        z = z / vae.config.scaling_factor if scaled else z
        frames = []
        for chunk in z.split(frames_per_chunk):
            chunk = chunk.to(device, self.dtype)
            images = vae.decode(chunk) if stripe_rows is None else decode_in_stripes(vae, chunk, stripe_rows, device)
            frames.append(images.float().cpu())
            if progress is not None:
                progress(sum(len(f) for f in frames), len(z))
        video = (torch.cat(frames) * 0.5 + 0.5).clamp(0, 1)
        return rearrange(video, "(b f) c h w -> b f h w c", b=latents.shape[0])

    @torch.no_grad()
    def encode(self, video, frames_per_chunk=4, progress=None, stripe_rows=None, device=None, scaled=True):
        """Video [B, F, H, W, 3] in 0..1 -> sampler-space latents [B, C, F, h, w] (the posterior mean), float32.
        ``stripe_rows``, ``device``, ``scaled``: as in ``decode``."""
        vae = self._require("vae")
        device = device or module_device(vae)
        images = rearrange(video, "b f h w c -> (b f) c h w") * 2 - 1
        latents = []
        for chunk in images.split(frames_per_chunk):
            chunk = chunk.to(device, self.dtype)
            z = vae.encode(chunk) if stripe_rows is None else encode_in_stripes(vae, chunk, stripe_rows, device)
            latents.append(z.float())
            if progress is not None:
                progress(sum(len(z) for z in latents), len(images))
        z = torch.cat(latents)
        z = z * vae.config.scaling_factor if scaled else z
        return rearrange(z, "(b f) c h w -> b c f h w", b=video.shape[0])
