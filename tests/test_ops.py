"""The layer ops: the kernel choice (oneDNN's on x86 CPUs with AVX-512 for fp32 inference, torch's otherwise), the
oneDNN products giving F.linear's results, and layers whose forward a host wrapped being called."""
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from t2v_core import ops

X86 = platform.machine().lower() in ("x86_64", "amd64")
TOL = 1e-5  # oneDNN sums in another order than MKL: float rounding of 320-long dot products


@pytest.fixture(autouse=True)
def onednn(monkeypatch):
    """The oneDNN path on, wherever this torch has its ops: its arithmetic is checked on AVX2 CPUs too."""
    monkeypatch.setattr(ops, "ONEDNN", ops.ONEDNN_OPS)


def test_onednn_ops_are_there_on_x86_cpus():
    """The speed of the CPU UNet step rests on this path (bench/RESULTS.md); losing it silently would be a regression."""
    if not X86:
        pytest.skip("oneDNN linear is used on x86 CPUs only")
    x, w = torch.randn(8, 16), torch.randn(4, 16)
    assert ops.ONEDNN_OPS and ops.kernels(x, w) is ops.ONEDNN_KERNELS


@pytest.mark.skipif(not X86, reason="oneDNN linear is used on x86 CPUs only")
@pytest.mark.parametrize("case", ["float64", "bfloat16", "input needs grad", "weight needs grad", "bias needs grad",
                                  "compiling", "no avx-512"])
def test_everything_but_fp32_cpu_inference_takes_torch_kernels(case, monkeypatch):
    """oneDNN's linear has no backward, torch.compile picks its own kernels, and other dtypes stay on torch's."""
    dtype = {"float64": torch.float64, "bfloat16": torch.bfloat16}.get(case, torch.float32)
    x, w, b = torch.randn(8, 16, dtype=dtype), torch.randn(4, 16, dtype=dtype), torch.randn(4, dtype=dtype)
    if case.endswith("needs grad"):
        {"input": x, "weight": w, "bias": b}[case.split()[0]].requires_grad_()
    if case == "compiling":
        monkeypatch.setattr(ops, "_is_compiling", lambda: True)
    if case == "no avx-512":
        monkeypatch.setattr(ops, "ONEDNN", False)
    assert ops.kernels(x, w, b) is ops.TORCH_KERNELS
    with torch.no_grad():  # no gradient flows: oneDNN again for fp32
        assert ops.kernels(x, w, b) is (ops.ONEDNN_KERNELS if dtype == torch.float32 and case.endswith("grad")
                                        else ops.TORCH_KERNELS)


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
def test_onednn_linear_matches_f_linear(bias, strided):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 640 if strided else 320, generator=g)
    if strided:  # a view with row stride 2C
        x = x[..., :320]
    w = torch.randn(1280, 320, generator=g) / 320 ** 0.5
    b = torch.randn(1280, generator=g) if bias else None
    out = ops.ONEDNN_KERNELS.linear(x, w, b)
    assert out.shape == (2, 300, 1280)
    assert (out - F.linear(x, w, b)).abs().max().item() <= TOL


def test_linear_keeps_autograd():
    layer = ops.Linear(16, 4)
    x = torch.randn(3, 16, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(3, 16).detach())


def geglu_layer(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    layer = ops.Linear(320, 2 * 1280, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2 * 1280, 320, generator=g, dtype=dtype) / 320 ** 0.5)
        layer.bias.copy_(torch.randn(2 * 1280, generator=g, dtype=dtype) * 0.1)
    return layer, torch.randn(2, 300, 320, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float64 takes torch's kernels
def test_geglu_matches_value_times_gelu_of_gate(dtype):
    layer, x = geglu_layer(dtype)
    with torch.no_grad():
        value, gate = F.linear(x, layer.weight, layer.bias).chunk(2, dim=-1)
        assert (layer.geglu(x) - value * F.gelu(gate)).abs().max().item() <= TOL


def test_geglu_gives_gradients():
    """The product a LoRA trainer runs: gradients reach the input and the weight (an in-place GELU on the gate
    half, a view of the projection, fails here)."""
    layer, x = geglu_layer()
    x.requires_grad_()
    layer.geglu(x).square().mean().backward()
    assert torch.isfinite(x.grad).all() and layer.weight.grad.abs().sum() > 0


def test_split_equals_chunks_of_the_whole_product():
    layer = ops.Linear(64, 3 * 64)
    x = torch.randn(2, 77, 64)
    with torch.no_grad():
        for part, whole in zip(layer.split(x, 3), layer(x).chunk(3, dim=-1)):
            assert (part - whole).abs().max().item() <= TOL


@pytest.mark.parametrize("product", ["geglu", "split"])
@pytest.mark.parametrize("wrapping", ["forward hook", "replaced forward"])
def test_a_wrapped_layer_is_called(product, wrapping):
    """A host's hook or replaced forward (core's bypass LoRA replaces it) runs inside the fused products too."""
    layer, x = geglu_layer()
    if wrapping == "forward hook":
        layer.register_forward_hook(lambda module, args, out: out * 2)
    else:
        layer.forward = lambda x: ops.Linear.forward(layer, x) * 2
    with torch.no_grad():
        doubled = 2 * F.linear(x, layer.weight, layer.bias)
        if product == "geglu":
            got, expected = layer.geglu(x), ops.gated_gelu(doubled)
        else:
            got, expected = torch.cat(layer.split(x, 2), dim=-1), doubled
    assert (got - expected).abs().max().item() <= TOL
