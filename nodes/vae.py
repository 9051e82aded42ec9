"""The loader's VAE: core ComfyUI's ``VAE`` over t2v_core's KL autoencoder, for whole videos.

Core VAEDecode, VAEDecodeTiled, VAEEncode and VAEEncodeTiled call ``decode``, ``decode_tiled``, ``encode`` and
``encode_tiled``; here those decode every frame of [B, C, F, h, w] latents and encode an IMAGE batch as the frames
of one video, a few frames at a time so memory does not grow with the length. Tiled means t2v_core's stripes:
memory of one stripe, and the untiled frames. The latents are the VAE's own (ComfyUI's LATENT); the MODEL's latent
format scales them for the sampler.
"""
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.utils

from .validation import require_video_samples

STRIPE_ROWS = 64  # rows per stripe of the pack's tiled Decode / Encode (core's default tile_size 512 / 8 gives it)


def progress_bar(total):
    """A ``progress(done, total)`` callback that moves ComfyUI's progress bar and stops on /interrupt."""
    bar = comfy.utils.ProgressBar(total)

    def progress(done, total):
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total)

    return progress


def stripes(rows):
    """t2v_core's decode / encode options for ``rows`` rows per stripe, one frame at a time (None: whole frames)."""
    return {"frames_per_chunk": 1, "stripe_rows": rows} if rows else {}


def image_autoencoder(config):
    """Core's description (``comfy.sd.VAE``'s ``config``) of the image autoencoder with ``config``'s sizes: an SD
    VAE's ``ddconfig``, as core's checkpoint configs give it."""
    ch = config.block_out_channels[0]
    return {"params": {"embed_dim": config.latent_channels, "ddconfig": {
        "double_z": True, "z_channels": config.latent_channels, "resolution": 256, "in_channels": config.in_channels,
        "out_ch": config.out_channels, "ch": ch, "ch_mult": [c // ch for c in config.block_out_channels],
        "num_res_blocks": config.layers_per_block, "attn_resolutions": [], "dropout": 0.0}}}


class VAE(comfy.sd.VAE):
    """The loader's VAE. Core's constructor runs on the file's weights and sizes, so every attribute core's nodes and
    model management read is core's own; it builds core's image autoencoder on them, which this VAE then replaces
    by the pipeline's video autoencoder (one copy of the weights is kept)."""

    def __init__(self, pipe):
        super().__init__(sd=pipe.vae.state_dict(), config=image_autoencoder(pipe.vae.config), dtype=pipe.dtype)
        self.pipe = pipe
        self.first_stage_model = pipe.vae
        self.patcher = comfy.model_patcher.ModelPatcher(pipe.vae, load_device=self.device,
                                                        offload_device=self.patcher.offload_device)
        self.size = None  # core's cached model size, measured again on this autoencoder
        self.latent_channels = pipe.vae.config.latent_channels
        self.latent_dim = 3  # [B, C, F, h, w]
        self.downscale_ratio = self.upscale_ratio = pipe.vae_scale_factor
        self.crop_input = False  # frames of another size are refused by name (check_frame_size)

    def decode(self, samples_in, vae_options={}):
        """Video latents [B, C, F, h, w] -> frames [B, F, H, W, 3] in 0..1 (core VAEDecode joins the videos)."""
        return self.decode_video(samples_in)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        """``decode`` in stripes of ``tile_y`` rows (core's tile_size over 8; its tiles and overlaps are not needed:
        each layer still sees the whole frame)."""
        return self.decode_video(samples, stripe_rows=tile_y or STRIPE_ROWS)

    def encode(self, pixel_samples):
        """Frames [F, H, W, 3] in 0..1, one video -> latents [1, C, F, h, w] (the posterior mean)."""
        return self.encode_video(pixel_samples)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        return self.encode_video(pixel_samples, stripe_rows=STRIPE_ROWS)

    def decode_video(self, latents, input_name="samples", stripe_rows=None):
        latents = require_video_samples(latents, input_name, self.latent_channels, self.vae_dtype)
        progress = progress_bar(latents.shape[0] * latents.shape[2])
        mm.load_models_gpu([self.patcher])
        video = self.pipe.decode(latents, progress=progress, device=self.patcher.load_device, scaled=False,
                                 **stripes(stripe_rows))
        return video.to(self.output_device)

    def encode_video(self, images, input_name="pixels", stripe_rows=None):
        check_frame_size(images, self.downscale_ratio, input_name)
        mm.load_models_gpu([self.patcher])
        latents = self.pipe.encode(images[None, ..., :3], progress=progress_bar(images.shape[0]),
                                   device=self.patcher.load_device, scaled=False, **stripes(stripe_rows))
        return latents.to(self.output_device)


def check_frame_size(images, scale_factor, input_name="images"):
    """An error naming the input unless the frames of an IMAGE input are a whole number of latent cells."""
    _, height, width, _ = images.shape
    if height % scale_factor or width % scale_factor:
        raise ValueError(f"{input_name}: width and height must be multiples of {scale_factor}, got {width}x{height}; "
                         f"resize the frames first (e.g. Upscale Image to 1024x576 for zeroscope XL).")


def require_t2v_vae(vae, input_name="vae"):
    """``vae`` if it is the ModelScope T2V loader's VAE, else an error saying what was wired in."""
    if not isinstance(vae, VAE):
        kind = type(getattr(vae, "first_stage_model", vae)).__name__
        raise ValueError(f"{input_name}: expected the VAE of the ModelScope T2V checkpoint loader, got a core VAE "
                         f"({kind}) of another loader, which decodes one frame of a video latent; wire the ModelScope "
                         f"T2V loader's VAE output here")
    return vae
