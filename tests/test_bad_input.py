"""Bad input sent through POST /prompt as a careless or hostile user would: every kind is refused with a message
naming the input that carries it (and the file and key where a file is at fault), listed under that input alone,
before anything large is allocated; the server keeps serving."""
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from helpers import RunsCode, assert_still_serving, rejected, run_expecting_error, tiny_pipe, write_image, write_lora
from tiny import peft_state
from workflows import SAMPLER, SAVE, load, nodes_of, tiny_text_to_video, with_checkpoint

NOISE, DECODE, LOADER = "4", "6", "1"
NAN = float("nan")  # sent as a bare JSON NaN, as json.dumps writes it


def core_checks_combos(comfy):
    """ComfyUI 0.33 checks V3 combo values when a prompt is queued; 0.3.75 leaves them to the node."""
    return comfy.host.version != "0.3.75"


def refused_at_queue(comfy, prompt, node_id, field):
    """The 400's errors for ``node_id``, all of them under ``field``."""
    errors = rejected(comfy, prompt, node_id)
    assert errors and all(e["extra_info"]["input_name"] == field for e in errors), errors
    return errors


def random_bytes(path, size=4096):
    path.write_bytes(torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(7),
                                   dtype=torch.uint8).numpy().tobytes())
    return path


# --- 1. The noise node's declared ranges ---------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, kind", [
    ("width", 0, "value_smaller_than_min"),
    ("width", -8, "value_smaller_than_min"),
    ("width", 100000, "value_bigger_than_max"),
    ("width", 4104, "value_bigger_than_max"),
    ("height", 4104, "value_bigger_than_max"),
    ("length", 0, "value_smaller_than_min"),
    ("length", 4097, "value_bigger_than_max"),
    ("batch_size", 65, "value_bigger_than_max"),
    ("width", "abc", "invalid_input_type"),
])
def test_noise_video_ranges_are_enforced_naming_the_input(comfy, field, value, kind):
    prompt, _ = tiny_text_to_video()
    prompt[NOISE]["inputs"][field] = value
    errors = refused_at_queue(comfy, prompt, NOISE, field)
    assert [e["type"] for e in errors] == [kind], errors
    assert comfy.alive()


@pytest.mark.parametrize("field", ["width", "height"])
def test_a_size_not_a_multiple_of_8_is_refused_naming_it(comfy, field):
    """ComfyUI does not check an input's step; the noise node does, before it draws anything."""
    prompt, _ = tiny_text_to_video(**{field: 44})
    assert f"{field} must be a multiple of 8, got 44; use e.g. 40" in run_expecting_error(comfy, prompt)


# --- 2. NaN and infinity at the input that carries them ------------------------------------------------------------

@pytest.mark.parametrize("field", ["cfg", "eta"])
def test_nan_sampler_numbers_are_refused_naming_the_input(comfy, field):
    prompt, _ = tiny_text_to_video()
    prompt[SAMPLER]["inputs"][field] = NAN
    assert f"{field}: nan is not a finite number" in run_expecting_error(comfy, prompt)


@pytest.mark.parametrize("weight", ["nan", "1e30", "inf"])
def test_prompt_weights_that_are_no_sensible_number_are_refused(comfy, weight):
    prompt, _ = tiny_text_to_video()
    nodes_of(prompt, "ModelScopeT2VTextEncode")[0]["inputs"]["text"] = f"a (red fox:{weight}) in snow"
    message = run_expecting_error(comfy, prompt)
    assert "text: the weight" in message and "of 'red fox' is not a number between -100 and 100" in message


def test_nan_keyframe_strength_is_refused(comfy):
    write_image(comfy, "first_frame.png", size=(48, 32))
    prompt, _ = tiny_text_to_video(name="image_to_video_api.json")
    nodes_of(prompt, "ModelScopeT2VKeyframes")[0]["inputs"]["strength"] = NAN
    assert "strength: nan is not a finite number" in run_expecting_error(comfy, prompt)


def with_pack_lora(prompt, lora_name, strength_model=1.0, strength_clip=1.0):
    prompt["90"] = {"class_type": "ModelScopeT2VLoraLoader",
                    "inputs": {"model": [LOADER, 0], "clip": [LOADER, 1], "lora_name": lora_name,
                               "strength_model": strength_model, "strength_clip": strength_clip}}
    prompt[SAMPLER]["inputs"]["model"] = ["90", 0]
    return prompt


def with_core_lora(prompt, lora_name, strength=1.0):
    prompt["90"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": [LOADER, 0], "lora_name": lora_name, "strength_model": strength}}
    prompt[SAMPLER]["inputs"]["model"] = ["90", 0]
    return prompt


@pytest.fixture
def good_lora(comfy):
    return write_lora(comfy, "good_lora.safetensors", peft_state(tiny_pipe(comfy).unet, seed=3))


@pytest.mark.parametrize("loader", ["pack", "core"])
def test_nan_lora_strength_is_refused(comfy, good_lora, loader):
    prompt, _ = tiny_text_to_video()
    prompt = with_pack_lora(prompt, good_lora, NAN) if loader == "pack" else with_core_lora(prompt, good_lora, NAN)
    assert "strength_model: nan is not a finite number" in run_expecting_error(comfy, prompt)


def test_lora_file_with_nan_weights_is_refused_naming_file_and_key(comfy):
    state = peft_state(tiny_pipe(comfy).unet, seed=4)
    key = next(k for k in state if k.endswith("lora_B.weight"))
    state[key][0] = NAN
    name = write_lora(comfy, "nan_lora.safetensors", state)
    message = run_expecting_error(comfy, with_pack_lora(tiny_text_to_video()[0], name))
    assert f"nan_lora.safetensors: {key} holds NaN or infinite values" in message


def test_nan_latent_in_an_fp32_run_does_not_blame_fp16(comfy):
    latent = torch.randn(1, 4, 3, 4, 6)
    latent[0, 0, 1, 2, 3] = NAN
    save_file({"latent_tensor": latent}, comfy.base / "input" / "nan32.latent")
    prompt, _ = tiny_text_to_video()
    prompt["40"] = {"class_type": "LoadLatent", "inputs": {"latent": "nan32.latent"}}
    prompt[DECODE]["inputs"]["samples"] = ["40", 0]
    del prompt[SAMPLER]
    prompt[LOADER]["inputs"]["dtype"] = "fp32"
    message = run_expecting_error(comfy, prompt)
    assert "samples: the latent contains NaN" in message and "fp16" not in message


def diffusers_copy(comfy, checkpoints, name):
    return shutil.copytree(checkpoints["diffusers"], comfy.base / "models" / "text2video" / name)


def edit_json(path, **values):
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("file, key, value", [
    ("scheduler/scheduler_config.json", "beta_end", 5),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 0),
    ("unet/config.json", "norm_num_groups", 7),
    ("vae/config.json", "norm_num_groups", 7),
])
def test_checkpoint_config_values_are_refused_naming_file_and_key(comfy, checkpoints, file, key, value):
    name = f"bad-{key}-{file.split('/')[0]}"
    folder = diffusers_copy(comfy, checkpoints, name)
    edit_json(folder / file, **{key: value})
    message = run_expecting_error(comfy, with_checkpoint(name))
    assert f"{file.split('/')[-1]}: {key}" in message and str(folder / file) in message, message


# --- 3. Unreadable .safetensors files ------------------------------------------------------------------------------

def test_random_bytes_as_lora_are_named(comfy):
    random_bytes(comfy.base / "models" / "loras" / "noise_lora.safetensors")
    message = run_expecting_error(comfy, with_pack_lora(tiny_text_to_video()[0], "noise_lora.safetensors"))
    assert "noise_lora.safetensors: not a readable safetensors file" in message


def test_random_bytes_as_single_file_checkpoint_are_named(comfy):
    random_bytes(comfy.base / "models" / "text2video" / "noise.safetensors")
    message = run_expecting_error(comfy, with_checkpoint("noise.safetensors"))
    assert "noise.safetensors: not a readable safetensors file" in message


def test_random_bytes_as_vae_are_named(comfy):
    random_bytes(comfy.base / "models" / "vae" / "noise_vae.safetensors")
    prompt = with_checkpoint("tiny-t2v")
    prompt[LOADER]["inputs"]["vae_name"] = "noise_vae.safetensors"
    assert "noise_vae.safetensors: not a readable safetensors file" in run_expecting_error(comfy, prompt)
    assert_still_serving(comfy)


# --- 4. Latents of another model -----------------------------------------------------------------------------------

def with_hunyuan_latent(prompt, into, field):
    prompt["45"] = {"class_type": "EmptyHunyuanLatentVideo",
                    "inputs": {"width": 48, "height": 32, "length": 5, "batch_size": 1}}
    prompt[into]["inputs"][field] = ["45", 0]
    return prompt


@pytest.mark.parametrize("denoise, scheduler", [(1.0, "modelscope"), (0.5, "modelscope"), (1.0, "karras")])
def test_16_channel_latent_into_the_sampler_is_refused(comfy, denoise, scheduler):
    prompt = with_hunyuan_latent(tiny_text_to_video()[0], SAMPLER, "latent")
    prompt[SAMPLER]["inputs"].update(denoise=denoise, scheduler=scheduler)
    assert "latent: a latent of 16 channels [1, 16, 2, 4, 6], this model reads 4" in run_expecting_error(comfy, prompt)


def test_16_channel_latent_into_decode_is_refused(comfy):
    prompt = with_hunyuan_latent(tiny_text_to_video()[0], DECODE, "samples")
    del prompt[SAMPLER]
    assert "samples: a latent of 16 channels [1, 16, 2, 4, 6], this model reads 4" in run_expecting_error(comfy, prompt)


def test_16_channel_latent_into_core_ksampler_is_refused(comfy):
    """Core KSampler swaps an all-zeros latent of other channels for an empty one itself; one with content is
    another model's video, refused before the first step."""
    save_file({"latent_tensor": torch.randn(1, 16, 2, 4, 6)}, comfy.base / "input" / "hunyuan.latent")
    prompt, _ = tiny_text_to_video(name="text_to_video_ksampler_api.json")
    prompt["45"] = {"class_type": "LoadLatent", "inputs": {"latent": "hunyuan.latent"}}
    prompt["5"]["inputs"]["latent_image"] = ["45", 0]
    assert "latent: a latent of 16 channels [1, 16, 2, 4, 6], this model reads 4" in run_expecting_error(comfy, prompt)


# --- 5. Embeddings -------------------------------------------------------------------------------------------------

def embeddings(comfy):
    folder = comfy.base / "models" / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def with_text(prompt, text):
    nodes_of(prompt, "ModelScopeT2VTextEncode")[0]["inputs"]["text"] = text
    return prompt


def test_embedding_of_the_loaded_text_encoders_width_works(comfy):
    """The tiny tower is 128 wide: its own 128-wide embedding is read, a 1024-wide one is refused."""
    folder = embeddings(comfy)
    save_file({"emb_params": 0.02 * torch.randn(2, 128)}, folder / "tiny_style.safetensors")
    save_file({"emb_params": 0.02 * torch.randn(2, 1024)}, folder / "sd2_style.safetensors")
    prompt = with_text(tiny_text_to_video()[0], "a fox, embedding:tiny_style")
    assert comfy.run(prompt)["status"]["status_str"] == "success"
    message = run_expecting_error(comfy, with_text(tiny_text_to_video()[0], "a fox, embedding:sd2_style"))
    assert "text: embedding:sd2_style is 1024 wide; this text encoder reads 128-wide embeddings" in message


def test_corrupt_embedding_is_reported_as_corrupt(comfy):
    random_bytes(embeddings(comfy) / "broken.safetensors")
    message = run_expecting_error(comfy, with_text(tiny_text_to_video()[0], "a fox, embedding:broken"))
    assert "embedding:broken:" in message and "broken.safetensors: not a readable safetensors file" in message
    assert "not found" not in message


def test_pickled_embedding_that_would_run_code_is_refused(comfy, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"string_to_param": {"*": torch.zeros(1, 128)}, "payload": RunsCode(marker)},
               embeddings(comfy) / "evil.pt")
    message = run_expecting_error(comfy, with_text(tiny_text_to_video()[0], "a fox, embedding:evil"))
    assert "embedding:evil:" in message and "refused to load" in message
    assert not marker.exists()


def test_prompt_ending_in_embedding_colon(comfy):
    message = run_expecting_error(comfy, with_text(tiny_text_to_video()[0], "a fox in snow embedding:"))
    assert "text: 'embedding:' is not followed by a name" in message
    assert_still_serving(comfy)


# --- 6. Context windows on another axis than the frames ------------------------------------------------------------

def with_context_windows(prompt, sampler_id, dim):
    windows = load("long_video_api.json")["8"]
    windows["inputs"].update(model=[LOADER, 0], context_length=2, context_overlap=1, dim=dim)
    prompt["8"] = windows
    prompt[sampler_id]["inputs"]["model"] = ["8", 0]
    return prompt


@pytest.mark.parametrize("sampler", ["pack", "core"])
@pytest.mark.parametrize("dim", [0, 4, 5])
def test_context_windows_off_the_frames_axis_are_refused(comfy, sampler, dim):
    name = "text_to_video_api.json" if sampler == "pack" else "text_to_video_ksampler_api.json"
    prompt = with_context_windows(tiny_text_to_video(length=4, name=name)[0], SAMPLER if sampler == "pack" else "5", dim)
    message = run_expecting_error(comfy, prompt)
    assert f"model: context windows on dim {dim}; set ContextWindowsManual's dim to 2" in message


# --- 7. filename_prefix with a NUL ---------------------------------------------------------------------------------

def test_nul_in_filename_prefix_is_refused_naming_it(comfy):
    prompt, _ = tiny_text_to_video()
    prompt[SAVE]["inputs"]["filename_prefix"] = "videos/a\u0000b"
    errors = refused_at_queue(comfy, prompt, SAVE, "filename_prefix")
    assert [e["type"] for e in errors] == ["custom_validation_failed"]
    assert "filename_prefix: 'videos/a\\x00b' holds a NUL character" in errors[0]["details"]


# --- 9. Memory: refused before the noise is drawn ------------------------------------------------------------------

def test_a_video_no_sampling_could_fit_is_refused_by_the_noise_node(comfy):
    prompt, _ = tiny_text_to_video(width=1024, height=1024, length=4096)
    entry = comfy.run(prompt)
    (error,) = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    assert error["node_id"] == NOISE, error
    assert "length: 1 x 4096 frames at 1024x1024 need about" in error["exception_message"]
    assert "fewer frames" in error["exception_message"]


# --- 10. One message, one input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("node, field, value", [
    (SAVE, "format", "avi"),
    (LOADER, "dtype", "fp64"),
    (LOADER, "weight_dtype", "fp4"),
    (LOADER, "vae_name", "nowhere.safetensors"),
    (NOISE, "fill", "ones"),
    (SAMPLER, "sampler_name", "plms"),
    (SAMPLER, "scheduler", "sometimes"),
])
def test_a_bad_choice_is_reported_under_its_input_alone(comfy, node, field, value):
    prompt, _ = tiny_text_to_video()
    prompt[node]["inputs"][field] = value
    checked_by_pack = field in ("scheduler",)
    if core_checks_combos(comfy) or checked_by_pack:
        errors = refused_at_queue(comfy, prompt, node, field)
        assert len(errors) == 1 and repr(value) in errors[0]["details"], errors
    else:  # ComfyUI 0.3.75: the node refuses it when it runs, before it loads or writes anything
        assert f"{field}: {value!r} is not one of the options" in run_expecting_error(comfy, prompt)


def test_a_missing_checkpoint_is_reported_once_under_ckpt_name(comfy):
    prompt = with_checkpoint("not-downloaded")
    errors = refused_at_queue(comfy, prompt, LOADER, "ckpt_name")
    assert len(errors) == 1 and "'not-downloaded'" in errors[0]["details"], errors
