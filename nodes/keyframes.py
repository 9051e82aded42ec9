"""Image-to-video and keyframes: frames given as images, kept while the sampler makes the rest of the clip.

The LATENT holds the encoded images at their frames and a per-frame ``noise_mask`` (ComfyUI's inpainting
convention, [B, 1, F, h, w], 0 = keep): the pack's sampler (either scheduler) and core KSampler replace the kept
frames by the re-noised originals at every step, so the free frames are made around them and the temporal layers
carry the motion through.
"""
import re

import torch
from comfy_api.latest import io

from .loader import CATEGORY
from .settings import limits
from .vae import require_t2v_vae
from .validation import require_finite


def keyframe_indices(text, length, images):
    """"0, -1" -> [0, length - 1], negative from the end; ``images`` must be one per frame, one for all of them, or
    more (a whole video, whose last frames are placed)."""
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if not items or not all(re.fullmatch(r"-?\d+", item) for item in items):
        raise ValueError(f"frames: {text!r} is not a list of frame numbers, e.g. '0' or '0, -1'")
    indices = []
    for item in items:
        frame = int(item)
        if not -length <= frame < length:
            raise ValueError(f"frames: frame {frame} is past the clip's {length} frames (0 to {length - 1}, or -1 "
                             f"for the last)")
        indices.append(frame % length)
    if len(set(indices)) != len(indices):
        raise ValueError(f"frames: {text!r} names a frame twice")
    if 1 < images < len(indices):
        raise ValueError(f"images: {images} images for {len(indices)} frames ({text!r}); give one image per frame, "
                         f"one image for all of them, or a whole video to continue")
    return indices


class Keyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VKeyframes",
            display_name="ModelScope Text-to-Video Keyframes (image to video)",
            category=CATEGORY,
            description="Places images at frames of a clip and keeps them while the sampler makes the other frames: "
                        "image-to-video from a first frame, from first and last frames, or any keyframes.",
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE from the ModelScope T2V checkpoint loader."),
                io.Image.Input("images", tooltip="The keyframes, in the order of frames, or a whole video: its last "
                                                 "frames go to 'frames' (to continue it). Width and height multiples "
                                                 "of 8 (they set the video's size)."),
                io.Int.Input("length", **limits("num_frames"), tooltip="Frames of the clip."),
                io.String.Input("frames", default="0",
                                tooltip="Where the images go: '0' (image to video), '0, -1' (first and last), any "
                                        "frame numbers; negative count from the end."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1 keeps the keyframes as they are; lower values let the sampler change them "
                                       "(0 ignores them)."),
            ],
            outputs=[io.Latent.Output(tooltip="[1, 4, length, h, w] latents with the keyframes and a per-frame "
                                              "noise_mask; sample it at denoise 1.0.")],
        )

    @classmethod
    def execute(cls, vae, images, length, frames, strength) -> io.NodeOutput:
        require_finite(strength=strength)
        vae = require_t2v_vae(vae)
        indices = keyframe_indices(frames, length, len(images))
        images = images[-len(indices):] if len(images) > len(indices) else images  # a video: its last frames go on
        count = len(images)
        encoded = vae.encode_video(images, "images")  # [1, C, count, h, w]
        encoded = encoded.expand(-1, -1, len(indices), -1, -1) if count == 1 else encoded
        samples = torch.zeros(encoded.shape[:2] + (length,) + encoded.shape[3:])
        mask = torch.ones(1, 1, length, *encoded.shape[3:])
        samples[:, :, indices] = encoded
        mask[:, :, indices] = 1.0 - strength
        return io.NodeOutput({"samples": samples, "noise_mask": mask})
