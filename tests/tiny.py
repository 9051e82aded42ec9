"""Tiny random checkpoints in every published layout, written with the reference libraries' own savers.

One set of random weights (every parameter drawn, zero-initialised ones included) is written as: the original
ModelScope folder, a diffusers folder (fp32 and fp16, safetensors and .bin), a zeroscope v2 folder, single UNet
files and the project's one-file format. Sizes keep every test at CPU speed: the UNet has two levels of 32/64
channels (GroupNorm 32 as the original hard-codes), the VAE four levels (so latents are H/8), the text tower 128
wide with 3 blocks in the OpenCLIP file (2 used). Random LoRA factors for these networks (PEFT and Stable LoRA
names) and an image model's checkpoint built from them (SD-1.x layout) are made here too.
"""
import gzip
import json
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file

from t2v_core import keymaps
from t2v_core.components import export_state
from t2v_core.text_encoder import TextEncoder, TextEncoderConfig
from t2v_core.unet3d import UNet3D, UNet3DConfig
from t2v_core.vae import AutoencoderKL, VAEConfig

UNET = UNet3DConfig(block_out_channels=(32, 64), cross_attention=(True, False), layers_per_block=1, context_dim=128,
                    head_dim=8, transformer_in_heads=8, norm_groups=32)
VAE = VAEConfig(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_groups=32)
TEXT = TextEncoderConfig(width=128, heads=2, layers=2)  # OpenCLIP files do not store heads: 64-wide heads as ViT-H


def randomize_(module, seed):
    """Draw every parameter: weights ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and ("norm" in name or name.split(".")[-2].startswith("ln")) and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif p.ndim == 1 or p.ndim == 0:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return module.eval()


def unet(cfg=UNET, seed=1):
    return randomize_(UNet3D(cfg), seed)


def vae(cfg=VAE, seed=2):
    return randomize_(AutoencoderKL(cfg), seed)


def openclip_model(seed=3):
    """A whole (tiny) OpenCLIP CLIP model, vision tower included, as ``open_clip_pytorch_model.bin`` holds one."""
    from open_clip.model import CLIP

    model = CLIP(embed_dim=32, vision_cfg=dict(width=64, head_width=32, layers=1, patch_size=8, image_size=32),
                 text_cfg=dict(width=TEXT.width, heads=TEXT.heads, layers=TEXT.layers + 1))
    return randomize_(model, seed)


def text_encoder(clip):
    """Our text tower holding the used part of ``clip``'s weights."""
    model = TextEncoder(TEXT).eval()
    state = clip.state_dict()
    model.load_state_dict({k: state[keymaps.text_openclip(k, ())[0][0]] for k in model.state_dict()})
    return model


def unet_original_state(model):
    cfg = model.config
    return export_state(model, partial(keymaps.unet_original, layers_per_block=cfg.layers_per_block,
                                       attention_levels=cfg.cross_attention))


def vae_ldm_state(model):
    return export_state(model, partial(keymaps.vae_ldm, levels=len(model.config.block_out_channels)))


# --- Layouts ---------------------------------------------------------------------------------------------------

def write_original(folder, unet_model, vae_model, clip, configuration=True, with_vae=True, unet_dtype=None):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = unet_model.config
    if configuration:
        config = {"framework": "pytorch", "task": "text-to-video-synthesis",
                  "model": {"type": "latent-text-to-video-synthesis",
                            "model_args": {"ckpt_clip": "open_clip_pytorch_model.bin",
                                           "ckpt_unet": "text2video_pytorch_model.pth",
                                           "ckpt_autoencoder": "VQGAN_autoencoder.pth", "max_frames": 16, "tiny_gpu": 1},
                            "model_cfg": {"unet_in_dim": 4, "unet_dim": cfg.block_out_channels[0], "unet_y_dim": 768,
                                          "unet_context_dim": cfg.context_dim, "unet_out_dim": 4,
                                          "unet_dim_mult": [c // cfg.block_out_channels[0] for c in cfg.block_out_channels],
                                          "unet_num_heads": cfg.transformer_in_heads, "unet_head_dim": cfg.head_dim,
                                          "unet_res_blocks": cfg.layers_per_block, "unet_attn_scales": [1],
                                          "unet_dropout": 0.1, "temporal_attention": "True", "num_timesteps": 1000,
                                          "mean_type": "eps", "var_type": "fixed_small", "loss_type": "mse"}},
                  "pipeline": {"type": "latent-text-to-video-synthesis"}}
        (folder / "configuration.json").write_text(json.dumps(config))
    unet_state = unet_original_state(unet_model)
    if unet_dtype is not None:
        unet_state = {k: v.to(unet_dtype) for k, v in unet_state.items()}
    torch.save(unet_state, folder / "text2video_pytorch_model.pth")
    if with_vae:
        # A whole LDM checkpoint: the VAE under first_stage_model., beside keys of other networks.
        state = {f"first_stage_model.{k}": v for k, v in vae_ldm_state(vae_model).items()}
        state["model.diffusion_model.out.2.bias"] = torch.zeros(4)
        state["cond_stage_model.model.ln_final.weight"] = torch.ones(8)
        torch.save({"state_dict": state, "global_step": 0}, folder / "VQGAN_autoencoder.pth")
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def write_tokenizer(folder):
    """CLIP's BPE vocabulary and merges (as shipped in OpenCLIP) in the Hugging Face tokenizer's file format."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "pad_token": "!",
         "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))


def diffusers_modules(unet_model, vae_model, text_model):
    """The reference diffusers/transformers modules holding the same weights (loaded strictly)."""
    from diffusers import AutoencoderKL as RefVAE
    from diffusers import UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = unet_model.config
    down = tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in cfg.cross_attention)
    up = tuple("CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(cfg.cross_attention))
    ref_unet = UNet3DConditionModel(
        sample_size=8, in_channels=cfg.in_channels, out_channels=cfg.out_channels, down_block_types=down,
        up_block_types=up, block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_groups, cross_attention_dim=cfg.context_dim, attention_head_dim=cfg.head_dim)
    ref_unet.load_state_dict(unet_model.state_dict(), strict=True)
    vcfg = vae_model.config
    ref_vae = RefVAE(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(vcfg.block_out_channels),
                     up_block_types=("UpDecoderBlock2D",) * len(vcfg.block_out_channels),
                     block_out_channels=vcfg.block_out_channels, layers_per_block=vcfg.layers_per_block,
                     latent_channels=vcfg.latent_channels, norm_num_groups=vcfg.norm_groups, sample_size=64)
    ref_vae.load_state_dict(vae_model.state_dict(), strict=True)
    tcfg = text_model.config
    ref_text = CLIPTextModel(CLIPTextConfig(
        vocab_size=tcfg.vocab_size, hidden_size=tcfg.width, intermediate_size=4 * tcfg.width,
        num_hidden_layers=tcfg.layers, num_attention_heads=tcfg.heads, max_position_embeddings=tcfg.context_length,
        hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=32))
    hf_state = export_state(text_model, keymaps.text_hf)
    missing, unexpected = ref_text.load_state_dict(hf_state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return ref_unet.eval(), ref_vae.eval(), ref_text.eval()


def write_diffusers(folder, unet_model, vae_model, text_model, variant=None, safe=True):
    """A diffusers ``TextToVideoSDPipeline`` folder saved by diffusers itself."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline
    from transformers import CLIPTokenizer

    folder = Path(folder)
    ref_unet, ref_vae, ref_text = diffusers_modules(unet_model, vae_model, text_model)
    write_tokenizer(folder / "tokenizer")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = TextToVideoSDPipeline(vae=ref_vae, text_encoder=ref_text, tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                                 unet=ref_unet, scheduler=scheduler)
    if variant == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(folder, safe_serialization=safe, variant=variant)
    write_tokenizer(folder / "tokenizer")  # transformers 5 saves no vocab.json / merges.txt
    if not safe:  # transformers 5 saves only safetensors; write the .bin a real older repo has
        suffix = f".{variant}" if variant else ""
        for f in (folder / "text_encoder").glob("model*.safetensors"):
            f.unlink()
        state = {f"text_model.{k}": v for k, v in ref_text.state_dict().items()}  # the older prefixed layout
        torch.save(state, folder / "text_encoder" / f"pytorch_model{suffix}.bin")
    return folder


def write_single_unet_files(folder, unet_model):
    """A single UNet in every way one is found: bare original keys, ``model.diffusion_model.`` prefixed keys, diffusers keys."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    original = unet_original_state(unet_model)
    torch.save(original, folder / "unet_original.pth")
    save_file({f"model.diffusion_model.{k}": v for k, v in original.items()}, folder / "unet_prefixed.safetensors")
    save_file({k: v.contiguous() for k, v in unet_model.state_dict().items()}, folder / "unet_diffusers.safetensors")
    return folder


def sd15_checkpoint(truth):
    """An image-model checkpoint in the SD-1.x single-file layout: the spatial UNet under model.diffusion_model.,
    beside a VAE and a text encoder, and no temporal layers."""
    temporal = ("temopral_conv", "input_blocks.0.1.")
    state = {k: v for k, v in unet_original_state(truth["unet"]).items()
             if not any(t in k for t in temporal) and not k.split(".")[2:3] == ["2"]}
    state = {f"model.diffusion_model.{k}": v for k, v in state.items()}
    state.update({f"first_stage_model.{k}": v for k, v in vae_ldm_state(truth["vae"]).items()})
    state["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    return state


# --- LoRA files ------------------------------------------------------------------------------------------------

def peft_state(unet, seed, rank=2):
    """Random PEFT-named factors (``unet.<module>.lora_A.weight``) for every matrix of ``unet``, with alphas."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, param in unet.state_dict().items():
        if key.endswith(".weight") and param.ndim >= 2:
            out, inp, *kernel = param.shape
            module = "unet." + key[:-len(".weight")]
            state[f"{module}.lora_A.weight"] = torch.randn(rank, inp, *kernel, generator=g) * 0.05
            state[f"{module}.lora_B.weight"] = torch.randn(out, rank, *[1] * len(kernel), generator=g) * 0.05
            state[f"{module}.alpha"] = torch.tensor(2.0 * rank)
    return state


# Text-To-Video-Finetuning's converter leaves these under their diffusers names.
UNCONVERTED = ("conv_in.", "conv_out.", "time_embedding.")


def stable_lora_state(unet, text, seed, rank=4):
    """A Stable LoRA file's tensors for our ``unet`` and ``text`` as the trainer writes them: original ModelScope
    names, loralib's factor shapes (k x k convs: [3 out, 3 r] x [3 r, 3 in]; the temporal 3x1x1 Conv3d likewise;
    the temporal transformers' Conv1d projections [out, r, 1] x [r, in, 1]), q/k/v of the text tower apart."""
    g = torch.Generator().manual_seed(seed)
    original = partial(keymaps.unet_original, layers_per_block=unet.config.layers_per_block,
                       attention_levels=unet.config.cross_attention)
    modules = {}
    for key, param in unet.state_dict().items():
        if key.endswith(".weight") and param.ndim >= 2:
            name, shape = original(key, param.shape)[0]
            modules[key[:-7] if key.startswith(UNCONVERTED) else name[:-7]] = shape
    for key, param in text.state_dict().items():
        if key.endswith(".weight") and param.ndim == 2 and key != "token_embedding.weight":
            name = key[len("transformer."):-7]
            if ".in_proj" in name:
                modules.update({name.replace("in_proj", f"{p}_proj"): (param.shape[1], param.shape[1]) for p in "qkv"})
            else:
                modules[name] = tuple(param.shape)
    state = {}
    for name, shape in modules.items():
        out, inp, *kernel = shape
        if len(kernel) == 1:  # Conv1d [out, in, 1]
            a, b = (rank, inp, 1), (out, rank, 1)
        elif kernel:
            k = kernel[0]
            a, b = (rank * k, inp * k), (out * k, rank * k)
        else:
            a, b = (rank, inp), (out, rank)
        state[f"{name}.lora_A"] = torch.randn(a, generator=g) * 0.05
        state[f"{name}.lora_B"] = torch.randn(b, generator=g) * 0.05
    return state
