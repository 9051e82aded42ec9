"""A cheap estimate of sampling's working memory, checked before anything large is allocated."""
import torch

# Live activations per latent cell and channel, summed over the UNet's levels: the skip connections kept for the
# decoder plus the working tensors of the block being run (measured on small models: about 9).
ACTIVATIONS_PER_CELL = 10


class NotEnoughMemory(ValueError):
    """``what`` needs ``needed`` bytes of working memory on ``device`` and ``available`` are free. The message gives
    the figures; each front end adds what its user can change (``ADVICE`` is the Python API's)."""

    ADVICE = ("Use fewer frames or a smaller size, a 16-bit dtype on GPU, or the sliding window "
              "(generate(..., context_frames=16)).")

    def __init__(self, what, needed, available, device):
        self.what, self.needed, self.available, self.device = what, needed, available, device
        super().__init__(f"{what} needs about {needed / 2 ** 30:.1f} GiB of working memory on {device}, but only "
                         f"{available / 2 ** 30:.1f} GiB are free.")

    def with_advice(self, advice=None):
        """The message followed by ``advice`` (default: the Python API's)."""
        return f"{self} {advice or self.ADVICE}"


def available_bytes(device):
    """Memory free for new tensors on ``device``, or None where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def sampling_bytes(unet_config, batch, frames, height, width, dtype):
    """Bytes of activations one UNet forward needs for latents [batch, C, frames, height, width]."""
    cells = sum(channels * (height >> level) * (width >> level)
                for level, channels in enumerate(unet_config.block_out_channels))
    return ACTIVATIONS_PER_CELL * batch * frames * cells * dtype.itemsize


def check_fits(needed, device, what):
    available = available_bytes(device)
    if available is not None and needed > available:
        raise NotEnoughMemory(what, needed, available, device)
