"""Checks of the pack against ComfyUI's own code, in-process, where a server cannot show them: the tests run this
with a host's interpreter and ComfyUI tree and read the JSON it prints.

    python tests/in_comfyui.py COMFYUI_ROOT CUSTOM_NODES PACK_NAME model_system CHECKPOINT
    python tests/in_comfyui.py COMFYUI_ROOT CUSTOM_NODES PACK_NAME prompt_syntax CHECKPOINT CLIP_FILE EMBEDDINGS
    python tests/in_comfyui.py COMFYUI_ROOT CUSTOM_NODES PACK_NAME context_windows
    python tests/in_comfyui.py COMFYUI_ROOT CUSTOM_NODES PACK_NAME one_path CHECKPOINT
    python tests/in_comfyui.py COMFYUI_ROOT CUSTOM_NODES PACK_NAME core_latents CHECKPOINT VAE_FILE

model_system: a CPU-only server never loads a model partially. It loads CHECKPOINT through the pack's loader
(ComfyUI's comfy.ops layers), gives a clone a LoRA through core's LoraLoaderModelOnly path (PEFT names for the
linear and conv layers, Stable LoRA factors for the temporal convs, which become dense updates), and runs one UNet
forward each, fully loaded and partially loaded (about a third of the weights allowed on the load device).
Printed: the differences, what the partial load left offloaded, the warnings for a UNet patch the model cannot
apply, and the MODEL's memory estimate.

prompt_syntax: core CLIPLoader's text encoder (CLIP_FILE, an OpenCLIP ViT-H file, fp32 as --fp32-text-enc) and
CLIPTextEncode's encoding against the pack's CLIP on CHECKPOINT's copy of the same tower, for prompts with
weights, nesting, escapes, an embedding from EMBEDDINGS and more than 75 tokens, and at earlier layers (core's
clip_layer, CLIPSetLastLayer's); and the pack's errors for an embedding that is missing or 768 wide, and for core's
CLIP (of SD 2.x) wired into its Text Encode.

context_windows: the frame windows and blend weights of core's context handler (standard_static schedule,
overlap-linear fuse), fused as core fuses them, against t2v_core's ``context_windows``, for several clip lengths.
"""
import importlib
import json
import logging
import sys

root, custom_nodes, pack_name, check, *check_args = sys.argv[1:]
sys.path[:0] = [root, custom_nodes]

import comfy.cli_args  # noqa: E402  (ComfyUI's modules read their arguments at import)

comfy.cli_args.args.cpu = True
comfy.cli_args.args.fp32_text_enc = True

import comfy.sd  # noqa: E402
import torch  # noqa: E402
from comfy.model_patcher import LowVramPatch  # noqa: E402

pack = importlib.import_module(pack_name)
model_module = importlib.import_module(f"{pack_name}.nodes.model")
importlib.import_module(f"{pack_name}.nodes.patcher").register()
keymaps = importlib.import_module(f"{pack_name}.t2v_core.keymaps")
patches_module = importlib.import_module(f"{pack_name}.nodes.patches")
CPU = torch.device("cpu")


def diff(a, b):
    """The largest absolute difference of two tensors, or None when their shapes differ."""
    return (a.float() - b.float()).abs().max().item() if a.shape == b.shape else None


def refusals(cases):
    """{name: message} of the ``cases`` (name: call) that raise ValueError; a case that runs is left out."""
    errors = {}
    for name, run in cases.items():
        try:
            run()
        except ValueError as error:
            errors[name] = str(error)
    return errors


def lora_for(unet, rank=2, seed=0):
    """Random factors for every UNet matrix: PEFT names, and Stable LoRA's for the temporal 3x1x1 convs."""
    g = torch.Generator().manual_seed(seed)
    cfg, state = unet.config, {}
    for key, param in unet.state_dict().items():
        if not key.endswith(".weight") or param.ndim < 2:
            continue
        out, inp, *kernel = param.shape
        if param.ndim == 5:
            name = keymaps.unet_original(key, param.shape, cfg.layers_per_block, cfg.cross_attention)[0][0][:-7]
            k = kernel[0]
            state[f"{name}.lora_A"] = torch.randn(rank * k, inp * k, generator=g) * 0.05
            state[f"{name}.lora_B"] = torch.randn(out * k, rank * k, generator=g) * 0.05
            continue
        module = "unet." + key[:-7]
        state[f"{module}.lora_A.weight"] = torch.randn(rank, inp, *kernel, generator=g) * 0.05
        state[f"{module}.lora_B.weight"] = torch.randn(out, rank, *[1] * len(kernel), generator=g) * 0.05
    return state


def forward(patcher, inputs, lowvram):
    """One UNet forward with ``patcher`` loaded fully (lowvram 0) or within ``lowvram`` bytes; then unloaded."""
    patcher.load(CPU, lowvram_model_memory=lowvram, full_load=lowvram == 0)
    net = patcher.model
    calls = []
    original_call = LowVramPatch.__call__

    def counting(self, weight, *args, **kwargs):
        calls.append(self.key)
        return original_call(self, weight, *args, **kwargs)

    LowVramPatch.__call__ = counting
    try:
        with torch.no_grad():
            out = net.diffusion_model(*inputs)
    finally:
        LowVramPatch.__call__ = original_call
    offloaded = {name for name, m in net.named_modules() if hasattr(m, "prev_comfy_cast_weights")}
    report = {"offloaded_modules": len(offloaded), "lowvram_patch_calls": len(calls),
              "loaded_bytes": patcher.loaded_size(), "model_bytes": patcher.model_size(),
              "weights_on_load_device": sum(p.numel() for n, p in net.named_parameters()
                                            if n.rsplit(".", 1)[0] not in offloaded)}
    weights = {n: p.detach().clone() for n, p in net.named_parameters() if n.rsplit(".", 1)[0] in offloaded}
    patcher.unpatch_model(CPU)
    return out, report, weights


def unapplied_warning():
    """What the pack logs for a UNet patch it has no place for (core's middle_patch)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    patches_module.block_patches({"patches": {"middle_patch": [lambda x, extra: x]}})
    patches_module.block_patches({"patches": {"middle_patch": [lambda x, extra: x]}})
    logging.getLogger().removeHandler(handler)
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def model_system(checkpoint):
    checkpoint_value = model_module.load_checkpoint(checkpoint, "fp32")
    plain = checkpoint_value.model
    unet = plain.model.diffusion_model.unet
    original = {n: p.detach().clone() for n, p in plain.model.named_parameters()}
    with_lora = comfy.sd.load_lora_for_models(plain, None, lora_for(unet), 0.8, 0.0)[0]
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(2, 4, 3, 8, 8, generator=g), torch.tensor([700.0, 700.0]),
              torch.randn(2, 77, unet.config.context_dim, generator=g))
    budget = plain.model_size() // 3
    full, _, _ = forward(plain, inputs, 0)
    partial, report, _ = forward(plain, inputs, budget)
    lora_full, _, _ = forward(with_lora, inputs, 0)
    lora_partial, lora_report, offloaded = forward(with_lora, inputs, budget)
    restored = all(torch.equal(p, original[n]) for n, p in plain.model.named_parameters())
    print(json.dumps({
        "partial_vs_full": (partial - full).abs().max().item(),
        "lora_partial_vs_full": (lora_partial - lora_full).abs().max().item(),
        "lora_effect": (lora_full - full).abs().max().item(),
        "budget_bytes": budget, "partial": report, "lora_partial": lora_report,
        "offloaded_weights_unpatched": all(torch.equal(w, original[n]) for n, w in offloaded.items()),
        "weights_restored": restored, "unapplied_warnings": unapplied_warning(),
        "memory_required": {frames: plain.model.memory_required([2, 4, frames, 32, 32]) for frames in (16, 32)},
    }))


PROMPTS = {
    "plain": "a red fox running through fresh snow",
    "weighted": "a (red:1.3) fox in (fresh snow:0.8)",
    "nested": "a ((red)) fox in (deep (fresh snow:1.2):0.9) at dawn",
    "escaped": "a \\(red\\) fox in \\(fresh\\) snow",
    "embedding": "a photo of embedding:t2v_style fox in the snow",
    "weighted_embedding": "a photo of (embedding:t2v_style:1.2) fox",
    "long": ", ".join(["a red fox running through fresh snow under a pale winter sky"] * 8),
}


def prompt_syntax(checkpoint, clip_file, embeddings):
    import folder_paths

    folder_paths.folder_names_and_paths["embeddings"] = ([embeddings], {".safetensors", ".pt", ".bin"})
    core = comfy.sd.load_clip([clip_file], embedding_directory=[embeddings])
    ours = model_module.load_checkpoint(checkpoint, "fp32").clip
    results = {}
    for name, text in PROMPTS.items():
        expected = core.encode_from_tokens(core.tokenize(text)).float()
        got = ours.encode(text).float()
        results[name] = {"shape": list(got.shape), "core_shape": list(expected.shape),
                         "max_diff": diff(got, expected),
                         "differs_from_plain": None}
    plain = ours.encode(PROMPTS["plain"])
    results["weighted"]["differs_from_plain"] = (ours.encode(PROMPTS["weighted"]) - plain).abs().max().item()
    layers = {}
    for layer in (-3, -12, -24):
        core_layer, our_layer = core.clone(), ours.clone()
        core_layer.clip_layer(layer)
        our_layer.clip_layer(layer)
        layers[layer] = (our_layer.encode(PROMPTS["weighted"]) - core_layer.encode(PROMPTS["weighted"])).abs().max().item()
    text_encode = importlib.import_module(f"{pack_name}.nodes").TextEncode
    errors = refusals({"not_there": lambda: ours.encode("a fox, embedding:not_there"),
                       "sd15_style": lambda: ours.encode("a fox, embedding:sd15_style"),
                       "core_clip": lambda: text_encode.execute(core, "a fox")})
    print(json.dumps({"prompts": results, "layers": layers, "errors": errors,
                      "core_dtype": str(next(core.cond_stage_model.parameters()).dtype)}))


def context_windows():
    import comfy.context_windows as cw

    t2v_windows = importlib.import_module(f"{pack_name}.t2v_core.generate").context_windows
    results = []
    for frames, length, overlap in ((32, 16, 4), (96, 16, 4), (256, 16, 4), (28, 16, 4), (20, 16, 6), (40, 8, 1)):
        handler = cw.IndexListContextHandler(cw.get_matching_context_schedule("standard_static"),
                                             cw.get_matching_fuse_method("overlap-linear"), context_length=length,
                                             context_overlap=overlap, dim=0)
        core = cw.create_windows_static_standard(frames, handler, {})
        counts, fused = torch.zeros(frames), []
        for index_list in core:
            weights = torch.as_tensor(cw.get_context_weights(length, frames, index_list, handler), dtype=torch.float32)
            counts[index_list] += weights
            fused.append(weights)
        ours = t2v_windows(frames, length, overlap)
        results.append({
            "frames": frames, "windows": [[w[0], w[-1] + 1] for w in core], "ours": [[a, b] for a, b, _ in ours],
            "max_weight_diff": max((w / counts[idx] - o).abs().max().item()
                                   for idx, w, (_, _, o) in zip(core, fused, ours)) if len(core) == len(ours) else None})
    print(json.dumps(results))


def one_path(checkpoint):
    """The pack's sampler and core's sampling on CHECKPOINT's MODEL and on core's multi-GPU clone of it
    (``deepclone_multigpu``, which reloads the model through the loader's ``cached_patcher_init``; None where the
    host has no multi-GPU support), what a ControlNet in the conditioning answers, and which core samplers fail
    on the original's grid."""
    import comfy.sample

    sampler_node_module = importlib.import_module(f"{pack_name}.nodes.sampler")
    sampler_node = sampler_node_module.Sampler
    loaded = model_module.load_checkpoint(checkpoint, "fp32")
    noise = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    positive, negative = [[loaded.clip.encode("a red fox"), {}]], [[loaded.clip.encode(""), {}]]

    def pack(model, conditioning=positive):
        latent = {"samples": noise, "t2v_noise": True}
        return sampler_node.execute(model, conditioning, negative, latent, 3, 9.0, "ddim", 1.0).result[0]["samples"]

    def core(model):
        return comfy.sample.sample(model, noise, 3, 9.0, "euler", "normal", positive, negative, torch.zeros_like(noise),
                                   seed=0)

    failed = {}
    for name in sampler_node_module.SAMPLERS:
        latent = {"samples": noise, "t2v_noise": True}
        try:
            out = sampler_node.execute(loaded.model, positive, negative, latent, 2, 9.0, name, 1.0).result[0]["samples"]
            assert torch.isfinite(out).all(), "non-finite latents"
        except Exception as error:  # noqa: BLE001 (every failure is reported by name)
            failed[name] = f"{type(error).__name__}: {error}"
    report = {"clone": None, "samplers_run": len(sampler_node_module.SAMPLERS), "samplers_failed": failed}
    if hasattr(loaded.model, "deepclone_multigpu"):
        clone = loaded.model.deepclone_multigpu()
        weights = dict(loaded.model.model.named_parameters())
        report["clone"] = {
            "own_weights": all(p.data_ptr() != weights[n].data_ptr() for n, p in clone.model.named_parameters()),
            "same_weights": all(torch.equal(p, weights[n]) for n, p in clone.model.named_parameters()),
            "pack_diff": (pack(clone) - pack(loaded.model)).abs().max().item(),
            "core_diff": (core(clone) - core(loaded.model)).abs().max().item()}
    report["control_errors"] = refusals({
        "sampler": lambda: pack(loaded.model, [[positive[0][0], {"control": object()}]]),
        "unet": lambda: loaded.model.model.diffusion_model(noise, torch.tensor([500.0]), positive[0][0],
                                                           control={"output": []})})
    print(json.dumps(report))


def core_types(checkpoint, lora_dir):
    """Core nodes that take CLIP, VAE and LATENT on the pack loader's outputs, against the pack's own nodes:
    CLIPTextEncode, CLIPSetLastLayer, LoraLoader (a LoRA in LORA_DIR with a text part), VAEDecode(Tiled),
    VAEEncode(Tiled) into the pack's sampler, and the device selection nodes where the host has them; and what
    the pack's nodes and the VAE answer to a core VAE of another model and to latents of other shapes."""
    import folder_paths
    import nodes as core

    folder_paths.folder_names_and_paths["loras"] = ([lora_dir], {".safetensors"})
    pack_nodes = importlib.import_module(f"{pack_name}.nodes")
    loaded = model_module.load_checkpoint(checkpoint, "fp32")
    clip, vae, model = loaded.clip, loaded.vae, loaded.model

    def core_context(clip, text):
        return core.CLIPTextEncode().encode(clip, text)[0][0][0]

    def pack_context(clip, text):
        return pack_nodes.TextEncode.execute(clip, text).result[0][0][0]

    texts = {"plain": "a red fox in the snow", "weighted": "a (red:1.3) fox, ((snow)), [dusk]:0.8, \\(paw\\)",
             "long": ", ".join(["a red fox running through fresh snow under a pale winter sky"] * 8)}
    report = {"text": {name: diff(core_context(clip, t), pack_context(clip, t)) for name, t in texts.items()}}
    plain = pack_context(clip, texts["plain"])
    layers, layer_errors = {}, {}
    for layer in (-2, -3, -1):
        try:
            layers[layer] = diff(core_context(core.CLIPSetLastLayer().set_last_layer(clip, layer)[0], texts["plain"]),
                                 plain)
        except ValueError as error:
            layer_errors[layer] = str(error)
    report.update(layers=layers, layer_errors=layer_errors)

    name = sorted(folder_paths.get_filename_list("loras"))[0]
    core_model, core_clip = core.LoraLoader().load_lora(model, clip, name, 1.0, 0.8)
    pack_model, pack_clip = pack_nodes.lora.LoraLoader.execute(model, clip, name, 1.0, 0.8).result
    report["lora"] = {"clip_diff": diff(core_context(core_clip, texts["plain"]), pack_context(pack_clip, texts["plain"])),
                      "clip_moved": diff(core_context(core_clip, texts["plain"]), plain),
                      "clip_type": type(core_clip).__name__,
                      "unet_patches": [len(core_model.patches), len(pack_model.patches)]}

    latents = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    frames = pack_nodes.Decode.execute(vae, {"samples": latents}).result[0]
    pack_tiled = pack_nodes.Decode.execute(vae, {"samples": latents}, tiled=True).result[0]
    report["decode"] = {"frames": list(frames.shape),
                        "vae_decode": diff(core.VAEDecode().decode(vae, {"samples": latents})[0], frames) * 255,
                        "vae_decode_tiled": diff(core.VAEDecodeTiled().decode(vae, {"samples": latents}, 64, 16)[0],
                                                 frames) * 255,
                        "pack_tiled": diff(pack_tiled, frames) * 255}
    images = frames[:3]
    encoded = pack_nodes.Encode.execute(vae, images).result[0]
    core_encoded = core.VAEEncode().encode(vae, images)[0]
    core_tiled = core.VAEEncodeTiled().encode(vae, images, 64, 0)[0]
    positive, negative = [[plain, {}]], [[pack_context(clip, ""), {}]]

    def sampled(latent):
        return pack_nodes.Sampler.execute(model, positive, negative, latent, 3, 9.0, "ddim", 0.6).result[0]["samples"]

    report["encode"] = {"latents": list(encoded["samples"].shape),
                        "vae_encode": diff(core_encoded["samples"], encoded["samples"]),
                        "vae_encode_tiled": diff(core_tiled["samples"], encoded["samples"]),
                        "sampled": diff(sampled(core_encoded), sampled(encoded))}

    try:
        multigpu = importlib.import_module("comfy_extras.nodes_multigpu")
    except ImportError:
        report["devices"] = None
    else:
        moved_clip = multigpu.SelectCLIPDeviceNode.execute(clip, "cpu").result[0]
        moved_vae = multigpu.SelectVAEDeviceNode.execute(vae, "default").result[0]
        report["devices"] = {"clip_device": str(moved_clip.patcher.load_device),
                             "clip_diff": diff(pack_context(moved_clip, texts["plain"]), plain),
                             "vae_diff": diff(pack_nodes.Decode.execute(moved_vae, {"samples": latents}).result[0],
                                              frames)}

    other_vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    report["errors"] = refusals({
        "pack_decode_other_vae": lambda: pack_nodes.Decode.execute(other_vae, {"samples": latents}),
        "vae_decode_16_channels": lambda: core.VAEDecode().decode(vae, {"samples": torch.zeros(1, 16, 3, 4, 4)}),
        "vae_decode_image_latent": lambda: core.VAEDecode().decode(vae, {"samples": torch.zeros(1, 4, 4, 4)}),
        "vae_encode_odd_size": lambda: core.VAEEncode().encode(vae, torch.zeros(2, 30, 32, 3))})
    print(json.dumps(report))


def core_latents(checkpoint, vae_file):
    """The pack's LATENT against core's convention: CHECKPOINT with the full-size VAE_FILE (an SD-sized KL
    autoencoder in LDM keys) through the pack's Encode / Decode and its MODEL's latent format, against core's own
    VAE (core VAELoader's ``comfy.sd.VAE`` of the same file) and SD 1.5's latent format, frame by frame; and core
    LatentUpscale / LatentUpscaleBy on the pack's 5-D latents against the same nodes on its frames as image latents."""
    import comfy.latent_formats
    import comfy.utils
    import nodes as core

    pack_nodes = importlib.import_module(f"{pack_name}.nodes")
    loaded = model_module.load_checkpoint(checkpoint, "fp32", vae_path=vae_file)
    core_vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_file))

    def as_images(latents):  # [1, C, F, h, w] -> [F, C, h, w]
        return latents[0].movedim(1, 0)

    g = torch.Generator().manual_seed(7)
    video = torch.rand(3, 32, 32, 3, generator=g)
    latents = torch.randn(1, 4, 3, 4, 4, generator=g)
    encoded = pack_nodes.Encode.execute(loaded.vae, video).result[0]["samples"]
    core_encoded = core.VAEEncode().encode(core_vae, video)[0]["samples"]
    frames = pack_nodes.Decode.execute(loaded.vae, {"samples": latents}).result[0]
    core_frames = core.VAEDecode().decode(core_vae, {"samples": as_images(latents)})[0]
    latent_format = loaded.model.model.latent_format
    report = {"core_vae": type(core_vae.first_stage_model).__name__,
              "encode": diff(as_images(encoded), core_encoded), "encoded_std": encoded.std().item(),
              "decode": diff(frames, core_frames) * 255, "frames_std": frames.std().item(),
              "process_in": diff(latent_format.process_in(latents), comfy.latent_formats.SD15().process_in(latents)),
              "scale_factor": latent_format.scale_factor,
              "attributes_core_sets_and_the_pack_lacks": sorted(set(vars(core_vae)) - set(vars(loaded.vae))),
              "pack_vae_size": loaded.vae.model_size(), "pack_vae_dtype": str(loaded.vae.vae_dtype)}
    upscales = {}
    for name, run in (("LatentUpscale", lambda s: core.LatentUpscale().upscale(s, "bilinear", 64, 64, "disabled")),
                      ("LatentUpscaleBy", lambda s: core.LatentUpscaleBy().upscale(s, "bislerp", 1.5))):
        video_latent = run({"samples": latents})[0]["samples"]
        image_latents = run({"samples": as_images(latents)})[0]["samples"]
        upscales[name] = {"shape": list(video_latent.shape), "diff": diff(as_images(video_latent), image_latents)}
    report["upscale"] = upscales
    print(json.dumps(report))


CHECKS = {"model_system": model_system, "prompt_syntax": prompt_syntax, "context_windows": context_windows,
          "one_path": one_path, "core_types": core_types,
          "core_latents": core_latents}
CHECKS[check](*check_args)
