"""LoRA files in t2v_core: diffusers/PEFT names against PEFT's own adapters in diffusers' UNet3DConditionModel,
Stable LoRA against the A1111 text2video extension's arithmetic, and the full-size key set of a Stable LoRA file
as Text-To-Video-Finetuning writes it."""
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import t2v_core
from helpers import read_keys
from t2v_core import keymaps
from t2v_core.components import export_state
from t2v_core.text_encoder import TextEncoder, TextEncoderConfig
from t2v_core.unet3d import UNet3D, UNet3DConfig
from tiny import stable_lora_state

PROMPT = "a panda playing guitar on times square"
# Every layer kind of the UNet: attention and feed-forward linears, the transformers' projections, the ResBlocks'
# convs and time projections, and the temporal Conv3d layers (index 2 of conv1, 3 of conv2-4).
PEFT_TARGETS = (r".*(to_q|to_k|to_v|to_out\.0|proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|time_emb_proj"
                r"|resnets\.\d+\.conv[12]|temp_convs\.\d+\.conv1\.2|temp_convs\.\d+\.conv[234]\.3)$")
RANK, ALPHA = 4, 8.0


def peft_lora(unet, seed):
    """PEFT adapters (random factors) in a diffusers UNet, and the file diffusers would write for them."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=PEFT_TARGETS), unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    state = {f"unet.{k}": v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    modules = {k[:-len(".lora_A.weight")] for k in state if k.endswith(".lora_A.weight")}
    state.update({f"{m}.alpha": torch.tensor(ALPHA) for m in modules})
    return state


def set_peft_strength(unet, strength):
    from peft.tuners.lora import LoraLayer

    for module in unet.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("default", strength)


@pytest.fixture(scope="module")
def peft_file(checkpoints, tmp_path_factory):
    from diffusers import UNet3DConditionModel

    unet = UNet3DConditionModel.from_pretrained(Path(checkpoints["diffusers"]) / "unet")
    path = tmp_path_factory.mktemp("lora") / "peft_lora.safetensors"
    save_file(peft_lora(unet, seed=5), path)
    return path


def test_peft_names_cover_every_layer_kind(peft_file, checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    match = t2v_core.match_lora(t2v_core.read_lora(peft_file), pipe.unet)
    assert match.unmatched == [] and match.total_keys == 3 * len(match.weights)
    kinds = {pipe.unet.get_parameter(w.target.key).ndim for w in match.weights}
    assert kinds == {2, 4, 5}  # linear, Conv2d, the temporal Conv3d
    assert all(w.scale == ALPHA / RANK for w in match.weights)


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_peft_lora_unet_matches_peft_in_diffusers(strength, peft_file, checkpoints):
    """One UNet forward with the file applied by t2v_core, against PEFT's adapters at the same scale (fp32)."""
    from diffusers import UNet3DConditionModel

    ref = UNet3DConditionModel.from_pretrained(Path(checkpoints["diffusers"]) / "unet").eval()
    peft_lora(ref, seed=5)
    set_peft_strength(ref, strength)
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    g = torch.Generator().manual_seed(0)
    latents, context = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 77, 128, generator=g)
    timesteps = torch.tensor([500])
    with torch.no_grad():
        plain = pipe.unet(latents, timesteps, context)
        t2v_core.apply_lora(pipe, peft_file, strength)
        ours = pipe.unet(latents, timesteps, context)
        expected = ref(latents, timesteps, encoder_hidden_states=context).sample
    assert (ours - expected).abs().max().item() <= 1e-4
    assert (plain - expected).abs().max().item() > 1e-2


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_peft_lora_frames_match_diffusers_pipeline(strength, peft_file, checkpoints):
    """generate with the LoRA against TextToVideoSDPipeline with PEFT's adapters, same seed: within 2/255."""
    from diffusers import TextToVideoSDPipeline

    ref = TextToVideoSDPipeline.from_pretrained(checkpoints["diffusers"])
    ref.set_progress_bar_config(disable=True)
    peft_lora(ref.unet, seed=5)
    set_peft_strength(ref.unet, strength)
    expected = ref(PROMPT, num_frames=3, height=32, width=48, num_inference_steps=4, guidance_scale=9.0,
                   generator=torch.Generator("cpu").manual_seed(42), output_type="np").frames[0]
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    t2v_core.apply_lora(pipe, peft_file, strength)
    video = t2v_core.generate(pipe, PROMPT, num_frames=3, height=32, width=48, steps=4, guidance_scale=9.0, seed=42)
    assert np.abs(video.numpy() - expected).max() <= 2 / 255


# --- Stable LoRA ------------------------------------------------------------------------------------------------

def extension_merge(weight, lora_a, lora_b, strength):
    """The A1111 text2video extension's merge (``scripts/stable_lora/stable_utils/lora_processor.py``). It skips
    Conv1d layers; those get the linear rule on the squeezed factors here, as the trainer applied them."""
    if weight.ndim == 3:
        return weight + strength * (lora_b.squeeze(-1) @ lora_a.squeeze(-1)).unsqueeze(-1)
    if weight.ndim == 2:
        return weight + strength * (lora_b @ lora_a)
    view_shape = weight.shape
    if weight.ndim == 5:  # is_temporal
        i, o, k = weight.shape[:3]
        view_shape = (i, o, k, k, 1)
    lora_weight = (lora_b @ lora_a).view(view_shape)
    if weight.ndim == 5:
        lora_weight = torch.mean(lora_weight, dim=-2, keepdim=True)
    return weight + strength * lora_weight


def test_stable_lora_equals_the_extensions_arithmetic(checkpoints, tmp_path):
    """Applied to the original checkpoint's names, and the text tower's OpenCLIP ones, the extension's merge gives
    the weights t2v_core's ``apply_lora`` gives (for the q/k/v and Conv1d layers the extension leaves out, the same
    rule). 0.7 is the strength."""
    pipe = t2v_core.load_pipeline(checkpoints["original"])
    unet_map = partial(keymaps.unet_original, layers_per_block=pipe.unet.config.layers_per_block,
                       attention_levels=pipe.unet.config.cross_attention)
    unet_before = {k: v.clone() for k, v in export_state(pipe.unet, unet_map).items()}
    text_before = {k: v.clone() for k, v in export_state(pipe.text_encoder, keymaps.text_openclip).items()}
    lora = stable_lora_state(pipe.unet, pipe.text_encoder, seed=7)
    path = tmp_path / "webui_500_lora_text_to_video.safetensors"
    save_file({k: v.half() for k, v in lora.items()}, path, metadata={"stable_lora_text_to_video": "v1"})
    lora = t2v_core.read_lora(path)
    match = t2v_core.apply_lora(pipe, path, 0.7)
    conv3d = sum(p.ndim == 5 for p in pipe.unet.parameters())
    assert match.unmatched == [] and sum(w.temporal for w in match.weights) == conv3d == 32
    diffusers_names = {"conv_in": "input_blocks.0.0", "conv_out": "out.2", "time_embedding.linear_1": "time_embed.0",
                       "time_embedding.linear_2": "time_embed.2"}
    expected = dict(unet_before)
    for name in {k.rsplit(".", 1)[0] for k in lora}:
        a, b = lora[f"{name}.lora_A"].float(), lora[f"{name}.lora_B"].float()
        if name.startswith("resblocks."):
            continue
        key = diffusers_names.get(name, name) + ".weight"
        expected[key] = extension_merge(unet_before[key], a, b, 0.7)
    after = export_state(pipe.unet, unet_map)
    assert max((after[k] - expected[k]).abs().max().item() for k in expected) <= 1e-6
    assert max((after[k] - unet_before[k]).abs().max().item() for k in expected) > 1e-3

    text_expected = dict(text_before)
    for name in {k.rsplit(".", 1)[0] for k in lora if k.startswith("resblocks.")}:
        a, b = lora[f"{name}.lora_A"].float(), lora[f"{name}.lora_B"].float()
        if name.endswith(("q_proj", "k_proj", "v_proj")):
            key = "transformer." + name[:-len("q_proj")] + "in_proj_weight"
            rows = slice(*(i * a.shape[1] for i in ("qkv".index(name[-6]), "qkv".index(name[-6]) + 1)))
            text_expected[key] = text_expected[key].clone()
            text_expected[key][rows] += 0.7 * (b @ a)
        else:
            key = f"transformer.{name}.weight"
            text_expected[key] = extension_merge(text_before[key], a, b, 0.7)
    text_after = export_state(pipe.text_encoder, keymaps.text_openclip)
    assert max((text_after[k] - text_expected[k]).abs().max().item() for k in text_expected) <= 1e-6


def read_manifest(name):
    return {key: torch.empty(shape, device="meta") for key, shape in read_keys(name).items()}


def test_full_size_stable_lora_key_set_matches_every_key():
    """The key set (names and shapes) of a rank-16 Stable LoRA file of the 1.7B model, from Text-To-Video-Finetuning's
    save path (every Linear, Conv2d and Conv3d of the UNet, the text tower's encoder layers)."""
    with torch.device("meta"):
        unet, text = UNet3D(UNet3DConfig()), TextEncoder(TextEncoderConfig())
    match = t2v_core.match_lora(read_manifest("stable_lora_keys_text2video_finetuning.txt"), unet, text)
    assert (match.total_keys, match.matched_keys, match.unmatched) == (1424, 1424, [])
    assert len(match.of("unet")) == 574 and len(match.of("text_encoder")) == 138
    assert sum(w.temporal for w in match.weights) == 88


def test_keys_of_another_model_match_nothing(checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    sd_lora = {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(32, 4),
               "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(4.0)}
    match = t2v_core.apply_lora(pipe, sd_lora)
    assert (match.weights, match.matched_keys, len(match.unmatched)) == ([], 0, 3)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("unet.conv_in.lora_B.weight"), r"conv_in has no up \(lora_B / lora_up\) factor"),
    (lambda s: s.update({"unet.conv_in.lora_B.weight": torch.zeros(32, 3, 1, 1)}), "different ranks"),
    (lambda s: s.update({"unet.conv_in.lora_A.weight": torch.zeros(4, 5, 3, 3)}), r"do not fit conv_in.weight"),
])
def test_bad_factors_are_refused_naming_the_key(change, message, checkpoints):
    pipe = t2v_core.load_pipeline(checkpoints["diffusers"])
    state = {"unet.conv_in.lora_A.weight": torch.zeros(4, 4, 3, 3), "unet.conv_in.lora_B.weight": torch.zeros(32, 4, 1, 1)}
    change(state)
    before = pipe.unet.conv_in.weight.clone()
    with pytest.raises(t2v_core.LoraError, match=message):
        t2v_core.apply_lora(pipe, state, source="bad.safetensors")
    assert torch.equal(pipe.unet.conv_in.weight, before)
