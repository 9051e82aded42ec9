"""Prompts per frame: a keyframed prompt schedule and the per-frame text contexts it means.

The UNet's cross-attention reads the text once per frame, so neighbouring frames can read different texts while
the temporal layers keep the motion coherent. A schedule names a prompt at some frames; the frames between two
keyframes read the linear interpolation of their contexts, the frames before the first (after the last) the
first (last) keyframe's.
"""
import re

import torch

_LINE = re.compile(r"\s*(-?\d+)\s*:\s*(.*\S)\s*$")


class ScheduleError(ValueError):
    """A prompt schedule that cannot be read: the message names the line and what was expected."""


def parse_prompt_schedule(text, num_frames):
    """``"0: a calm sea\\n12: a storm at sea"`` -> [(0, "a calm sea"), (12, "a storm at sea")], sorted by frame.

    One ``FRAME: prompt`` per line (blank lines are skipped); a negative frame counts from the end (-1: the last).
    """
    keyframes = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise ScheduleError(f"line {number}: {line.strip()!r} is not 'FRAME: prompt' (e.g. '0: a calm sea')")
        frame = int(match[1])
        if not -num_frames <= frame < num_frames:
            raise ScheduleError(f"line {number}: frame {frame} is past the clip's {num_frames} frames "
                                f"(0 to {num_frames - 1}, or -1 for the last)")
        frame %= num_frames
        if frame in keyframes:
            raise ScheduleError(f"line {number}: frame {frame} already has a prompt ({keyframes[frame]!r})")
        keyframes[frame] = match[2]
    if not keyframes:
        raise ScheduleError("no keyframes: write one 'FRAME: prompt' per line, e.g. '0: a calm sea'")
    return sorted(keyframes.items())


def interpolate_contexts(frames, contexts, num_frames):
    """Per-frame contexts [num_frames, N, D] from the contexts [K, N, D] of the sorted keyframe ``frames``."""
    out = contexts.new_empty((num_frames, *contexts.shape[1:]))
    out[:frames[0]] = contexts[0]
    out[frames[-1]:] = contexts[-1]
    for (start, end), (first, last) in zip(zip(frames, frames[1:]), zip(contexts, contexts[1:])):
        weight = torch.arange(end - start, dtype=contexts.dtype, device=contexts.device) / (end - start)
        out[start:end] = torch.lerp(first, last, weight[:, None, None])  # [end - start, N, D]
    return out


def encode_prompt_schedule(encode, text, num_frames):
    """The per-frame context [1, num_frames, N, D] of a schedule; ``encode(prompt)`` gives a prompt's [1, N, D]
    (``lambda p: pipe.encode_prompt([p])``, or a host's text encoder)."""
    keyframes = parse_prompt_schedule(text, num_frames)
    contexts = [encode(prompt) for _, prompt in keyframes]
    lengths = [c.shape[1] for c in contexts]
    for (frame, prompt), length in zip(keyframes, lengths):
        if length != lengths[0]:
            raise ScheduleError(f"frame {frame}: {prompt[:40]!r} encodes to {length} tokens, frame {keyframes[0][0]}'s "
                                f"prompt to {lengths[0]}; the prompts of a schedule must encode to the same number "
                                f"of 77-token chunks (75 tokens each)")
    contexts = torch.cat(contexts)
    return interpolate_contexts([frame for frame, _ in keyframes], contexts, num_frames)[None]
