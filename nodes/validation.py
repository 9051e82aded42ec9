"""Checks of input values, each naming the input it concerns.

ComfyUI lists a message returned by a node's ``validate_inputs`` under every input of that function's signature,
and skips its own min/max checks for those inputs. So a node's ``validate_inputs`` takes at most one input; values
core does not check when a prompt is queued (a number's step, NaN, V3 combo values on ComfyUI 0.3.75) are checked
when the node runs, by the functions here, before it loads or allocates anything.
"""
import math

import torch


def choice_error(name, value, options):
    """None, or a message naming ``name`` when ``value`` is not one of ``options``."""
    if value is None or value in options:
        return None
    shown = ", ".join(map(str, options[:20])) + (" ..." if len(options) > 20 else "")
    return f"{name}: {value!r} is not one of the options ({shown or 'none found'})"


def check_choices(**inputs):
    """``validate_inputs``' answer for ``name=(value, options)`` pairs: True, or a message naming the first value
    that is not an option (ComfyUI 0.3.75 does not check V3 combo values itself)."""
    for name, (value, options) in inputs.items():
        error = choice_error(name, value, options)
        if error:
            return error
    return True


def require_choices(**inputs):
    """``name=(value, options)`` pairs; an error naming the first value that is not one of its options."""
    answer = check_choices(**inputs)
    if answer is not True:
        raise ValueError(answer)


def require_finite(**values):
    """An error naming the first input whose number is NaN or infinite (ComfyUI's min/max checks let NaN pass)."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name}: {value} is not a finite number; give a number such as the input's default")


def require_multiple(step, **values):
    """An error naming the first input that is not a multiple of ``step`` (ComfyUI does not check an input's step)."""
    for name, value in values.items():
        if value % step:
            raise ValueError(f"{name} must be a multiple of {step}, got {value}; use e.g. {value - value % step or step}")


def require_channels(input_name, shape, channels):
    """An error naming the input when a latent [B, C, ...] has other channels than the model reads."""
    if shape[1] != channels:
        raise ValueError(f"{input_name}: a latent of {shape[1]} channels {list(shape)}, this model reads {channels}; "
                         f"it comes from another model's node (e.g. a Hunyuan or Wan empty latent): make it with "
                         f"ModelScope T2V Noise Video or Encode.")


def require_video_samples(samples, input_name, channels=None, dtype=None):
    """``samples`` if they are video latents [B, C, F, h, w], else an error naming the input. ``channels``: the
    latent channels of the model or VAE they go to; ``dtype``: the compute dtype there (for the hint on NaN)."""
    if samples.ndim != 5:
        raise ValueError(f"{input_name}: expected a 5-D video latent [batch, 4, frames, height/8, width/8], got shape "
                         f"{list(samples.shape)}. Image latents (e.g. from Empty Latent Image) cannot be used here.")
    if channels is not None:
        require_channels(input_name, samples.shape, channels)
    if not torch.isfinite(samples).all():
        hint = " (try fp32 or bf16 instead of fp16)" if dtype == torch.float16 else ""
        raise ValueError(f"{input_name}: the latent contains NaN or infinite values; the step that produced it "
                         f"failed{hint}.")
    return samples
