"""Layers that compute in the input's dtype while their weights stay in their stored dtype.

The model classes take an ``ops`` namespace (as ComfyUI's ``comfy.ops`` does) so that precision is decided
outside the model: a 16-bit checkpoint can stay 16-bit in memory and be cast one layer at a time for fp32
compute, and a 32-bit checkpoint can run as it is.
"""
import torch
import torch.nn.functional as F
from torch import nn


def cast(param, x):
    """``param`` in ``x``'s dtype and on its device; no copy when it already is."""
    if param is None:
        return None
    return param.to(device=x.device, dtype=x.dtype, non_blocking=True)


class Linear(nn.Linear):
    def forward(self, x):
        return F.linear(x, cast(self.weight, x), cast(self.bias, x))


class Conv2d(nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, cast(self.weight, x), cast(self.bias, x))


class Conv3d(nn.Conv3d):
    def forward(self, x):
        return self._conv_forward(x, cast(self.weight, x), cast(self.bias, x))


class GroupNorm(nn.GroupNorm):
    def forward(self, x):
        return F.group_norm(x, self.num_groups, cast(self.weight, x), cast(self.bias, x), self.eps)


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, cast(self.weight, x), cast(self.bias, x), self.eps)
