"""Every checkpoint layout loads to the same networks: the outputs equal those of the weights that were written.

Re-laying weights changes no arithmetic, so fp32 layouts must match the source networks to 1e-6; 16-bit files
must match the source networks with their weights rounded to 16 bits.
"""
import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import t2v_core
from t2v_core.loading import save_single_file
from t2v_core.unet3d import UNet3DConfig
import tiny

EXACT = 1e-6
g = torch.Generator().manual_seed(0)
LATENTS, TIMESTEPS, CONTEXT = torch.randn(2, 4, 3, 8, 8, generator=g), torch.tensor([999, 21]), torch.randn(2, 7, 128, generator=g)
Z = torch.randn(1, 4, 2, 4, 4, generator=g)
PROMPTS = ["a red panda eating bamboo", ""]


def outputs(unet, vae, text):
    with torch.no_grad():
        return {
            "unet": unet(LATENTS, TIMESTEPS, CONTEXT),
            "vae": vae.decode(Z[0].permute(1, 0, 2, 3)) if vae is not None else None,
            "text": text(t2v_core.pipeline.Tokenizer()(PROMPTS)) if text is not None else None,
        }


@pytest.fixture(scope="module")
def expected(truth):
    return outputs(truth["unet"], truth["vae"], truth["text"])


@pytest.fixture(scope="module")
def expected_fp16_unet(truth):
    rounded = copy.deepcopy(truth["unet"]).half().float()
    return outputs(rounded, None, None)["unet"]


def assert_close(got, want, tol=EXACT):
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= tol


@pytest.mark.parametrize("layout", ["original", "diffusers", "diffusers_bin"])
def test_fp32_layouts_load_the_same_networks(layout, checkpoints, expected):
    pipe = t2v_core.load_pipeline(checkpoints[layout])
    got = outputs(pipe.unet, pipe.vae, pipe.text_encoder)
    for part in ("unet", "vae", "text"):
        assert_close(got[part], expected[part])


def test_fp16_variant_keeps_16_bit_weights_and_computes_in_fp32(checkpoints, expected_fp16_unet):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers_fp16"], dtype=torch.float32)
    assert pipe.unet.conv_in.weight.dtype == torch.float16  # no fp32 shadow copy
    assert_close(outputs(pipe.unet, None, None)["unet"], expected_fp16_unet, 1e-5)


def test_diffusers_variant_choice_follows_dtype(checkpoints, tmp_path):
    """A folder with both variants: fp32 compute reads the fp32 files, 16-bit compute the .fp16. ones."""
    import shutil

    both = shutil.copytree(checkpoints["diffusers"], tmp_path / "both")
    for part in ("unet", "vae", "text_encoder"):
        for f in (checkpoints["diffusers_fp16"] / part).glob("*.fp16.*"):
            shutil.copy(f, both / part)
    assert t2v_core.load_pipeline(both).unet.conv_in.weight.dtype == torch.float32
    assert t2v_core.load_pipeline(both, dtype=torch.bfloat16).unet.conv_in.weight.dtype == torch.bfloat16
    assert t2v_core.load_pipeline(both, variant="fp16").unet.conv_in.weight.dtype == torch.float16


def test_zeroscope_folder_loads_with_a_separate_vae(checkpoints, expected, expected_fp16_unet):
    vae_file = checkpoints["original"] / "VQGAN_autoencoder.pth"
    pipe = t2v_core.load_pipeline(checkpoints["zeroscope"], vae=vae_file)
    got = outputs(pipe.unet, pipe.vae, pipe.text_encoder)
    assert_close(got["unet"], expected_fp16_unet, 1e-5)
    assert_close(got["vae"], expected["vae"])
    assert_close(got["text"], expected["text"])


@pytest.mark.parametrize("name", ["unet_original.pth", "unet_prefixed.safetensors", "unet_diffusers.safetensors"])
def test_single_unet_files(name, checkpoints, expected):
    unet = t2v_core.load_unet(checkpoints["unet_files"] / name)
    assert unet.config == tiny.UNET
    assert_close(outputs(unet, None, None)["unet"], expected["unet"])
    pipe = t2v_core.load_pipeline(checkpoints["unet_files"] / name)
    with pytest.raises(ValueError, match="has no vae"):
        pipe.decode(Z)


PUBLISHED_FILES = {  # each network's file as published, in the diffusers folder and in the original one
    "diffusers": ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                  "vae/diffusion_pytorch_model.safetensors"),
    "diffusers_fp16": ("unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors",
                       "vae/diffusion_pytorch_model.fp16.safetensors"),
    "original": ("text2video_pytorch_model.pth", "open_clip_pytorch_model.bin", "VQGAN_autoencoder.pth"),
}


@pytest.mark.parametrize("layout", PUBLISHED_FILES)
def test_published_files_load_one_by_one_under_any_name(layout, checkpoints, tmp_path):
    """UNet, text encoder and VAE as three single files, renamed (their layout is read from their keys): the
    networks of the whole folder."""
    import shutil

    renamed = [shutil.copy(checkpoints[layout] / file, tmp_path / f"{part}{Path(file).suffix}")
               for part, file in zip(("unet", "text", "vae"), PUBLISHED_FILES[layout])]
    folder = t2v_core.load_pipeline(checkpoints[layout])
    split = t2v_core.load_pipeline(renamed[0], text_encoder=renamed[1], vae=renamed[2])
    want, got = outputs(folder.unet, folder.vae, folder.text_encoder), outputs(split.unet, split.vae, split.text_encoder)
    for part in ("unet", "vae", "text"):
        assert_close(got[part], want[part], 0)


def test_convert_writes_one_file_that_loads_the_same(checkpoints, expected, tmp_path):
    out = tmp_path / "model.safetensors"
    result = subprocess.run([sys.executable, "-m", "t2v_core", "convert", str(checkpoints["original"]), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert t2v_core.detect_format(out) == "single_file"
    pipe = t2v_core.load_pipeline(out)
    got = outputs(pipe.unet, pipe.vae, pipe.text_encoder)
    for part in ("unet", "vae", "text"):
        assert_close(got[part], expected[part])
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left


def test_single_file_keeps_16_bit_storage(checkpoints, tmp_path):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers_fp16"])
    path = save_single_file(pipe, tmp_path / "fp16.safetensors")
    assert t2v_core.load_pipeline(path).unet.conv_in.weight.dtype == torch.float16
    fp32_bytes = sum(p.numel() * 4 for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
    assert path.stat().st_size < 0.6 * fp32_bytes


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_16_bit_compute_runs_on_cpu(dtype, tol, checkpoints, expected):
    """16-bit compute is slow on this CPU but correct to 16-bit rounding."""
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"], dtype=dtype)
    with torch.no_grad():
        got = pipe.unet(LATENTS.to(dtype), TIMESTEPS, CONTEXT.to(dtype))
    assert got.dtype == dtype
    assert_close(got.float(), expected["unet"], tol)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_loading_memory_maps_the_file(suffix, tmp_path):
    """Loading a UNet file must not read it into memory: peak RSS grows by well under the file's size."""
    cfg = UNet3DConfig(block_out_channels=(128, 256, 256), cross_attention=(True, True, False), layers_per_block=2,
                       context_dim=256, head_dim=32)
    path = tmp_path / f"unet{suffix}"
    state = tiny.unet(cfg).state_dict()
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)
    del state
    script = textwrap.dedent(f"""
        import torch, t2v_core
        def kib(field):  # VmHWM is this process's peak RSS (ru_maxrss would start from the parent's at fork)
            return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])
        before = kib("VmRSS")
        unet = t2v_core.load_unet({str(path)!r}, head_dim=32)
        print((kib("VmHWM") - before) * 1024)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grown = int(result.stdout.split()[-1])
    size = path.stat().st_size
    assert size > 100e6
    assert grown < 0.5 * size, f"loading a {size / 1e6:.0f} MB file grew peak RSS by {grown / 1e6:.0f} MB"


@pytest.mark.slow
def test_compiled_unet_gives_the_same_eps(checkpoints, expected):
    """torch.compile is opt-in; compiling (about a minute on this CPU) must not change the maths beyond fusion rounding."""
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"], compile=True)
    assert_close(outputs(pipe.unet, None, None)["unet"], expected["unet"], 1e-4)
