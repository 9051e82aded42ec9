"""The generation settings, each written once: its name (as ``generate`` spells it), default, range or choices, type,
a line of help, and the name batch prompt lines and the command line gave it first. ``generate``, the command line,
batch prompt lines, the nodes and scripts/run read them here.

The module imports nothing of the package, nor torch: scripts/run checks its options with it before the runtime is
installed.
"""
from dataclasses import dataclass
from types import SimpleNamespace


def _shown(number):
    return f"{number:g}" if isinstance(number, float) else str(number)


@dataclass(frozen=True)
class Setting:
    """``low``, ``high``: a number's range (``high`` None: no upper end); ``choices``: a text's options; a default of
    None means the setting may be off (None). ``alias``: the name prompt lines and the command line gave it first."""
    name: str
    default: object
    type: type
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    alias: str | None = None

    @property
    def expected(self):
        """What a value must be, e.g. "a whole number in 1-4096"."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.type is str:
            return "a string"
        kind = "a whole number" if self.type is int else "a number"
        if self.high is None:
            return f"{kind} of at least {_shown(self.low)}"
        return f"{kind} in {_shown(self.low)}-{_shown(self.high)}"

    def check(self, value):
        """``value`` as ``generate`` takes it (a float for a number), or a ValueError saying what it must be."""
        if value is None and self.default is None:
            return None
        if self.choices:
            fits = value in self.choices
        elif self.type is str:
            fits = isinstance(value, str)
        else:
            kinds = int if self.type is int else (int, float)
            fits = (isinstance(value, kinds) and not isinstance(value, bool) and value >= self.low  # NaN fails here
                    and (self.high is None or value <= self.high))
        if not fits:
            raise ValueError(f"{self.expected}, got {value!r}")
        return float(value) if self.type is float else value


SETTINGS = {setting.name: setting for setting in (
    Setting("negative_prompt", "", str, "what the video should not show"),
    Setting("num_frames", 16, int, "frames of the video", 1, 4096, alias="frames"),
    Setting("height", 256, int, "video height in pixels, a multiple of the VAE's scale (8)", 8, 4096),
    Setting("width", 256, int, "video width in pixels, a multiple of the VAE's scale (8)", 8, 4096),
    Setting("steps", 50, int, "sampling steps", 1, 999),
    Setting("guidance_scale", 9.0, float, "classifier-free guidance scale; 1 turns guidance off", 0.0, 100.0,
            alias="cfg"),
    Setting("seed", 0, int, "seed of the noise; the same seed gives the same video", 0, 2 ** 64 - 1),
    # Each sampler is t2v_core.samplers' function named after it, sample_<name>.
    Setting("sampler", "ddim", str, "the sampler; ddim reproduces the original and diffusers",
            choices=("ddim", "euler", "euler_ancestral", "dpmpp_2m", "lcm")),
    Setting("eta", 0.0, float, "ddim's fresh noise per step: 0 is deterministic, 1 DDPM-like", 0.0, 1.0),
    Setting("context_frames", None, int, "opt-in sliding window for clips longer than memory allows (an "
                                         "approximation)", 1),
    Setting("context_overlap", 4, int, "frames shared by neighbouring windows", 0),
    Setting("denoise", 1.0, float, "how far an input video is noised before sampling; 1.0 starts from noise", 0.01,
            1.0),
    Setting("batch_size", 1, int, "videos made at once", 1, 64),
    Setting("fps", 8, int, "frames per second of the video file", 1, 120),
)}
DEFAULT = SimpleNamespace(**{name: setting.default for name, setting in SETTINGS.items()})  # DEFAULT.num_frames: 16
