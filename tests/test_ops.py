"""The layer ops: the oneDNN matrix-multiply path of x86 CPUs with AVX-512 gives F.linear's results, is left on
other CPUs, and steps aside for autograd."""
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from t2v_core import ops

X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(autouse=True)
def onednn(monkeypatch):
    """The oneDNN path on, wherever this torch has its ops: its arithmetic is checked on AVX2 CPUs too."""
    monkeypatch.setattr(ops, "ONEDNN", ops.ONEDNN_OPS)


def test_onednn_ops_are_there_on_x86_cpus():
    """The speed of the CPU UNet step rests on this path (bench/RESULTS.md); losing it silently would be a regression."""
    if not X86:
        pytest.skip("oneDNN linear is used on x86 CPUs only")
    x, w = torch.randn(8, 16), torch.randn(4, 16)
    assert ops.ONEDNN_OPS and ops.use_onednn(x, w)
    assert not ops.use_onednn(x.double(), w.double())


@pytest.mark.parametrize("capability, expected", [("avx2", False), ("avx512", True)])
def test_onednn_only_on_cpus_with_avx512(capability, expected):
    """On an AVX2-only CPU torch's own GEMM path (diffusers') is kept: oneDNN's was slower there for the text encoder.
    ATEN_CPU_CAPABILITY lowers the capability torch reports, as on such a CPU."""
    if not X86 or (capability == "avx512" and ops.CPU_CAPABILITY != "AVX512"):
        pytest.skip("needs an x86 CPU with AVX-512 to compare both")
    code = "from t2v_core import ops; print(ops.CPU_CAPABILITY, ops.ONEDNN)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": capability}).stdout.split()
    assert out == [capability.upper(), str(expected and ops.ONEDNN_OPS)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("strided", [False, True])
def test_linear_matches_f_linear(bias, strided):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 640 if strided else 320, generator=g)
    if strided:  # the GEGLU value half: a view with row stride 2C, read in place
        x = x[..., :320]
    w = torch.randn(1280, 320, generator=g) / 320 ** 0.5
    b = torch.randn(1280, generator=g) if bias else None
    with torch.no_grad():
        out = ops.linear(x, w, b)
    assert out.shape == (2, 300, 1280)
    assert (out - F.linear(x, w, b)).abs().max().item() <= 1e-5


def test_linear_keeps_autograd():
    layer = ops.Linear(16, 4)
    x = torch.randn(3, 16, requires_grad=True)
    assert not ops.use_onednn(x, layer.weight)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(3, 16).detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float64 takes the F.linear path
def test_geglu_matches_value_times_gelu_of_gate(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 320, generator=g, dtype=dtype)
    layer = ops.Linear(320, 2 * 1280, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2 * 1280, 320, generator=g, dtype=dtype) / 320 ** 0.5)
        layer.bias.copy_(torch.randn(2 * 1280, generator=g, dtype=dtype) * 0.1)
        value, gate = F.linear(x, layer.weight, layer.bias).chunk(2, dim=-1)
        fused, plain = layer.geglu(x), ops.geglu(layer(x))
    assert (fused - value * F.gelu(gate)).abs().max().item() <= 1e-5
    assert (plain - value * F.gelu(gate)).abs().max().item() <= 1e-5


def test_split_equals_chunks_of_the_whole_product():
    layer = ops.Linear(64, 3 * 64)
    x = torch.randn(2, 77, 64)
    with torch.no_grad():
        for part, whole in zip(layer.split(x, 3), layer(x).chunk(3, dim=-1)):
            assert (part - whole).abs().max().item() <= 1e-5
