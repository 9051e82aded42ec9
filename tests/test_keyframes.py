"""ModelScope T2V Keyframes: images kept at their frames while both samplers (and core KSampler) make the rest."""
import numpy as np
import pytest

import t2v_core
from helpers import frames, run_expecting_error, run_latent, write_image
from workflows import LENGTH, SAMPLER, core_graph, pack_graph


def with_keyframes(prompt, sampler_id, latent_input, image="key.png", frames_text="0", strength=1.0, length=LENGTH):
    prompt["60"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    prompt["61"] = {"class_type": "ModelScopeT2VKeyframes",
                    "inputs": {"vae": ["1", 2], "images": ["60", 0], "length": length, "frames": frames_text,
                               "strength": strength}}
    prompt[sampler_id]["inputs"][latent_input] = ["61", 0]
    prompt["62"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler_id, 0], "filename_prefix": "kf/latent"}}
    return prompt


@pytest.mark.parametrize("sampler_name, scheduler, tolerance", [
    ("euler", "karras", 1e-3),
    # the original's grid ends at alpha_bar[0], not at sigma 0: 0.029 of the noise is left on every frame
    ("ddim", "modelscope", 0.2),
])
def test_kept_frame_ends_as_its_encoded_image_and_the_rest_moves(comfy, sampler_name, scheduler, tolerance):
    image = write_image(comfy, "key.png")
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    encoded = pipe.encode(image[None, None], scaled=False)[:, :, 0]  # [1, C, h, w], the VAE's own
    latent = run_latent(comfy, with_keyframes(pack_graph(2, sampler_name, scheduler), SAMPLER, "latent"))
    assert (latent[:, :, 0] - encoded).abs().max().item() <= tolerance
    assert min((latent[:, :, f] - encoded).abs().mean().item() for f in range(2, LENGTH)) > 0.1


def test_pack_sampler_matches_core_ksampler_on_a_masked_latent(comfy):
    write_image(comfy, "key2.png", seed=1)
    ours = frames(comfy, with_keyframes(pack_graph(3, "euler", "karras"), SAMPLER, "latent", "key2.png", "0, -1"))
    core = frames(comfy, with_keyframes(core_graph(3, "euler", "karras"), "5", "latent_image", "key2.png", "0, -1"))
    assert np.abs(ours - core).max() <= 2


def test_strength_keeps_a_keyframe_partly(comfy):
    image = write_image(comfy, "key3.png", seed=2)
    encoded = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v").encode(image[None, None], scaled=False)[:, :, 0]
    drift = {s: (run_latent(comfy, with_keyframes(pack_graph(4, "euler", "karras"), SAMPLER, "latent", "key3.png",
                                                  strength=s))[:, :, 0] - encoded).abs().mean().item()
             for s in (1.0, 0.5, 0.0)}
    assert drift[1.0] < drift[0.5] < drift[0.0]


@pytest.mark.parametrize("frames_text, size, message", [
    ("0, 9", (32, 32), f"frames: frame 9 is past the clip's {LENGTH} frames"),
    ("0, x", (32, 32), "frames: '0, x' is not a list of frame numbers"),
    ("0", (36, 32), "images: width and height must be multiples of 8, got 36x32"),
])
def test_bad_keyframes_are_refused_naming_the_input(comfy, frames_text, size, message):
    write_image(comfy, "bad.png", size=size)
    prompt = with_keyframes(pack_graph(2, "euler", "karras"), SAMPLER, "latent", "bad.png", frames_text)
    assert message in run_expecting_error(comfy, prompt)


def test_image_to_video_workflow_runs(comfy):
    """workflows/image_to_video_api.json on the tiny checkpoint: frame 0 is the image (as the VAE renders it)."""
    from workflows import tiny_text_to_video

    image = write_image(comfy, "first_frame.png", size=(32, 32), seed=3)
    prompt, _ = tiny_text_to_video(length=4, steps=3, name="image_to_video_api.json")
    got = frames(comfy, prompt)
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    kept = t2v_core.to_uint8(pipe.decode(pipe.encode(image[None, None]))[0, 0]).astype(np.float32)
    assert got.shape == (4, 32, 32, 3)
    assert np.abs(got[0] - kept).mean() < np.abs(got[-1] - kept).mean() / 2


def test_extend_video_workflow_continues_a_video(comfy):
    """workflows/extend_video_api.json on the tiny checkpoint: a 6-frame video, its last 2 frames kept at the start
    of a 4-frame clip, and the clip's 2 new frames after the video."""
    from t2v_core.video import write_video
    from workflows import tiny_text_to_video

    write_video(np.random.default_rng(4).random((6, 32, 32, 3)), comfy.base / "input" / "video_to_extend.mp4", fps=8)
    prompt, _ = tiny_text_to_video(length=4, steps=3, name="extend_video_api.json")
    prompt["4"]["inputs"]["frames"] = "0, 1"
    prompt["12"]["inputs"].update(batch_index=2, length=2)
    got = frames(comfy, prompt)
    as_loaded = {"10": prompt["10"], "11": prompt["11"],
                 "7": {"class_type": "ModelScopeT2VSaveVideo",
                       "inputs": {"images": ["11", 0], "fps": 8, "filename_prefix": "kf/loaded", "format": "png"}}}
    video = frames(comfy, as_loaded)
    assert got.shape == (8, 32, 32, 3)
    assert np.abs(got[:6] - video).max() == 0
    assert np.abs(got[6:] - video[-1]).mean() > 1


def with_core_mask(prompt, masks):
    """A core SetLatentNoiseMask between the noise video and the sampler: ``masks`` solid 32x32 masks in a batch."""
    prompt["90"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 32, "height": 32}}
    prompt["91"] = {"class_type": "MaskToImage", "inputs": {"mask": ["90", 0]}}
    prompt["92"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["91", 0], "amount": masks}}
    prompt["93"] = {"class_type": "ImageToMask", "inputs": {"image": ["92", 0], "channel": "red"}}
    prompt["94"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["4", 0], "mask": ["93", 0]}}
    prompt[SAMPLER]["inputs"]["latent"] = ["94", 0]
    return prompt


def test_a_mask_for_another_number_of_frames_is_refused(comfy):
    """Core's SetLatentNoiseMask on the video latent: one mask for every frame or one per frame is sampled (all
    zeros: every frame kept as the noise video holds it); masks for 4 frames of a 6-frame clip are refused by name."""
    for masks in (1, LENGTH):
        entry = comfy.run(with_core_mask(pack_graph(4, "euler", "karras"), masks))
        assert entry["status"]["status_str"] == "success", (masks, entry["status"])
    message = run_expecting_error(comfy, with_core_mask(pack_graph(4, "euler", "karras"), 4))
    assert "noise_mask has masks for 4 frames, the latent has 6 frames" in message
