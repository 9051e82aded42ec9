import shutil
import tempfile

import pytest
import torch

import comfyui
import tiny
from scripts.main_job import SMOKE, make_smoke_checkpoint

torch.set_num_threads(max(torch.get_num_threads(), 1))


@pytest.fixture(scope="session")
def truth():
    """The tiny random networks every written checkpoint holds: our UNet and VAE, and a whole OpenCLIP model."""
    clip = tiny.openclip_model()
    return {"unet": tiny.unet(), "vae": tiny.vae(), "clip": clip, "text": tiny.text_encoder(clip)}


@pytest.fixture(scope="session")
def checkpoints(truth, tmp_path_factory):
    """Paths of the tiny checkpoint in each layout."""
    root = tmp_path_factory.mktemp("checkpoints")
    unet, vae, clip, text = truth["unet"], truth["vae"], truth["clip"], truth["text"]
    return {
        "original": tiny.write_original(root / "modelscope", unet, vae, clip),
        "zeroscope": tiny.write_original(root / "zs2_576w", unet, vae, clip, configuration=False, with_vae=False,
                                         unet_dtype=torch.float16),
        "diffusers": tiny.write_diffusers(root / "diffusers", unet, vae, text),
        "diffusers_fp16": tiny.write_diffusers(root / "diffusers_fp16", unet, vae, text, variant="fp16"),
        "diffusers_bin": tiny.write_diffusers(root / "diffusers_bin", unet, vae, text, safe=False),
        "unet_files": tiny.write_single_unet_files(root / "unet_files", unet),
    }


HOSTS = comfyui.hosts()


def free_disk():
    """Free space where the tests write: a full disk shows as errors in every test that writes a file."""
    return f"{shutil.disk_usage(tempfile.gettempdir()).free / 2**30:.1f} GiB free in {tempfile.gettempdir()}"


def pytest_report_header():
    tested = ", ".join(f"{h.version} ({h.root.relative_to(comfyui.REPO)})" for h in HOSTS)
    if len(HOSTS) == 1:
        tested = (f"{tested} only; no current ComfyUI is set up (COMFYUI_DIR unset and no "
                  f"../shared/ComfyUI-0.33.0), so the ComfyUI tests run on 0.3.75 alone")
    return [f"ComfyUI: {tested}", f"disk: {free_disk()} (the suite needs about 2 GiB at its peak)"]


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"disk at the end: {free_disk()}")


def pytest_generate_tests(metafunc):
    """Every test that uses the ``comfy`` server runs once per ComfyUI host. A module may set ``HOST_VARIANTS``, a
    function from a host to (host, variant) pairs, for the tests that take a ``variant``."""
    if "comfy" not in metafunc.fixturenames:
        return
    variants = getattr(metafunc.module, "HOST_VARIANTS", None)
    if variants is None or "variant" not in metafunc.fixturenames:
        metafunc.parametrize("comfy", HOSTS, indirect=True, ids=lambda h: h.id, scope="session")
        return
    pairs = [pair for host in HOSTS for pair in variants(host)]
    metafunc.parametrize(("comfy", "variant"), pairs, indirect=["comfy"], scope="session",
                         ids=[f"{host.id}-{variant}" for host, variant in pairs])


@pytest.fixture(scope="session")
def comfy(request, truth, tmp_path_factory):
    """A real ComfyUI server on 127.0.0.1 with this pack and the tiny checkpoint in models/text2video/tiny-t2v."""
    host = request.param
    base = tmp_path_factory.mktemp(host.id)
    tiny.write_original(base / "models" / "text2video" / "tiny-t2v", truth["unet"], truth["vae"], truth["clip"])
    server = comfyui.Server(host, base)
    yield server
    server.stop()


@pytest.fixture
def smoke_checkpoint(comfy):
    """The random-weight checkpoint scripts/run makes, in the server's models/text2video (written once per server)."""
    path = comfy.base / "models" / "text2video" / SMOKE
    if not path.exists():
        make_smoke_checkpoint(path)
    return path
