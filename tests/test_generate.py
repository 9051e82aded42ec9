"""generate() against diffusers' TextToVideoSDPipeline, and the command line."""
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import pytest
import torch

import t2v_core

PROMPT = "a panda playing guitar on times square"


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_generate_matches_diffusers_pipeline(layout, checkpoints):
    """Same seed, same weights: the frames agree within 1/255."""
    from diffusers import TextToVideoSDPipeline

    ref = TextToVideoSDPipeline.from_pretrained(checkpoints["diffusers"])
    ref.set_progress_bar_config(disable=True)
    expected = ref(PROMPT, num_frames=3, height=32, width=48, num_inference_steps=4, guidance_scale=9.0,
                   generator=torch.Generator("cpu").manual_seed(42), output_type="np").frames[0]
    pipe = t2v_core.load_pipeline(checkpoints[layout])
    video = t2v_core.generate(pipe, PROMPT, num_frames=3, height=32, width=48, steps=4, guidance_scale=9.0, seed=42)
    assert video.shape == (3, 32, 48, 3) == expected.shape
    assert np.abs(video.numpy() - expected).max() <= 1 / 255
    assert video.std() > 0.01


def test_generate_with_freeu_matches_diffusers_pipeline(checkpoints):
    """FreeU through ``patches``, against the pipeline whose UNet has ``enable_freeu`` with the same values."""
    from diffusers import TextToVideoSDPipeline

    factors = dict(s1=0.9, s2=0.2, b1=1.1, b2=1.2)
    ref = TextToVideoSDPipeline.from_pretrained(checkpoints["diffusers"])
    ref.set_progress_bar_config(disable=True)
    ref.unet.enable_freeu(**factors)
    expected = ref(PROMPT, num_frames=3, height=32, width=48, num_inference_steps=4, guidance_scale=9.0,
                   generator=torch.Generator("cpu").manual_seed(42), output_type="np").frames[0]
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    video = t2v_core.generate(pipe, PROMPT, num_frames=3, height=32, width=48, steps=4, guidance_scale=9.0, seed=42,
                              patches=t2v_core.freeu(pipe.unet.config, **factors))
    plain = t2v_core.generate(pipe, PROMPT, num_frames=3, height=32, width=48, steps=4, guidance_scale=9.0, seed=42)
    assert np.abs(video.numpy() - expected).max() <= 1 / 255
    assert np.abs(video.numpy() - plain.numpy()).max() > 4 / 255


def test_negative_prompt_and_guidance_match_diffusers(checkpoints):
    from diffusers import TextToVideoSDPipeline

    ref = TextToVideoSDPipeline.from_pretrained(checkpoints["diffusers"])
    ref.set_progress_bar_config(disable=True)
    expected = ref(PROMPT, negative_prompt="blurry, text", num_frames=2, height=32, width=32, num_inference_steps=3,
                   guidance_scale=15.0, generator=torch.Generator("cpu").manual_seed(3), output_type="np").frames[0]
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    video = t2v_core.generate(pipe, PROMPT, negative_prompt="blurry, text", num_frames=2, height=32, width=32,
                              steps=3, guidance_scale=15.0, seed=3)
    assert np.abs(video.numpy() - expected).max() <= 1 / 255


def test_initial_noise_rule():
    noise, _ = t2v_core.initial_noise(7, num_frames=5, height=64, width=96, scale_factor=8)
    expected = torch.randn((1, 4, 5, 8, 12), generator=torch.Generator("cpu").manual_seed(7))
    assert torch.equal(noise, expected)


@pytest.mark.parametrize("sampler", sorted(t2v_core.SAMPLERS))
def test_every_sampler_gives_a_video(sampler, checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    video = t2v_core.generate(pipe, PROMPT, num_frames=2, height=32, width=32, steps=3, seed=1, sampler=sampler)
    assert video.shape == (2, 32, 32, 3) and torch.isfinite(video).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(height=30), "height must be a positive multiple of 8, got 30"),
    (dict(width=0), "width must be a positive multiple of 8, got 0"),
    (dict(num_frames=0), "num_frames must be at least 1, got 0"),
    (dict(sampler="plms"), "unknown sampler 'plms'; expected one of ddim"),
])
def test_bad_arguments_are_refused(kwargs, message, checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    args = dict(num_frames=2, height=32, width=32, steps=2) | kwargs
    with pytest.raises(ValueError, match=message):
        t2v_core.generate(pipe, PROMPT, **args)


def ffmpeg_info(path):
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return result.stderr


def test_cli_generate_writes_a_playable_mp4(checkpoints, tmp_path):
    out = tmp_path / "panda.mp4"
    result = subprocess.run([sys.executable, "-m", "t2v_core", "generate", "--checkpoint", str(checkpoints["original"]),
                             "--prompt", PROMPT, "--out", str(out), "--frames", "5", "--height", "32", "--width", "48",
                             "--steps", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    info = ffmpeg_info(out)
    assert "h264" in info and "yuv420p" in info and "48x32" in info and "8 fps" in info
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = list(reader)
    assert meta["size"] == (48, 32) and len(frames) == 5
    assert out.read_bytes()[4:8] == b"ftyp" and b"moov" in out.read_bytes()[:4096]  # +faststart: index up front
    assert [p.name for p in tmp_path.iterdir()] == ["panda.mp4"]


@pytest.mark.parametrize("option, value, setting", [("--steps", "1000", "steps"), ("--num-frames", "0", "num_frames"),
                                                     ("--eta", "1.5", "eta"), ("--sampler", "plms", "sampler")])
def test_cli_refuses_a_setting_outside_its_range_before_loading(option, value, setting, tmp_path, capsys):
    """The range named is the settings table's; the checkpoint (missing here) is not even looked at."""
    from t2v_core.__main__ import main

    out = tmp_path / "x.mp4"
    assert main(["generate", "--checkpoint", str(tmp_path / "missing"), "--prompt", PROMPT, "--out", str(out),
                 option, value]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --") and error.endswith(f" must be {t2v_core.SETTINGS[setting].expected}, got "
                                                            f"{value if setting != 'sampler' else repr(value)}")
    assert not out.exists()


def test_cli_reports_a_bad_checkpoint_and_writes_nothing(checkpoints, tmp_path):
    out = tmp_path / "x.mp4"
    result = subprocess.run([sys.executable, "-m", "t2v_core", "generate", "--checkpoint", str(checkpoints["zeroscope"]),
                             "--prompt", PROMPT, "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "error:" in result.stderr and "VQGAN_autoencoder.pth" in result.stderr
    assert not out.exists()


def test_cli_words_its_own_advice(checkpoints, tmp_path):
    """Core errors are typed; the command line names its own options, not the Python API's arguments."""
    out = tmp_path / "x.mp4"
    unet_only = checkpoints["unet_files"] / "unet_diffusers.safetensors"
    result = subprocess.run([sys.executable, "-m", "t2v_core", "generate", "--checkpoint", str(unet_only),
                             "--prompt", PROMPT, "--out", str(out), "--steps", "1", "--frames", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and not out.exists()
    assert "has no vae; pass a separate VAE with --vae PATH" in result.stderr and "load_pipeline(" not in result.stderr
    huge = subprocess.run([sys.executable, "-m", "t2v_core", "generate", "--checkpoint", str(checkpoints["original"]),
                           "--prompt", PROMPT, "--out", str(out), "--frames", "4096", "--width", "2048",
                           "--height", "2048"], capture_output=True, text=True)
    assert huge.returncode == 2 and not out.exists()
    assert "Use fewer --frames" in huge.stderr and "context_frames=" not in huge.stderr


def test_python_errors_carry_their_facts(checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["unet_files"] / "unet_diffusers.safetensors")
    with pytest.raises(t2v_core.MissingComponent) as missing:
        pipe.encode_prompt(["x"])
    assert missing.value.part == "text_encoder"
    with pytest.raises(t2v_core.NotEnoughMemory) as memory:
        t2v_core.check_fits(2 ** 60, "cpu", "a test")
    assert memory.value.needed == 2 ** 60 and memory.value.available < 2 ** 60 and memory.value.what == "a test"
    assert "context_frames=16" in memory.value.with_advice()
