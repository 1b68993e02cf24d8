"""What autograd keeps for the backward pass of one training forward, measured without memory.

The stage's networks and inputs are built as fake tensors (torch's FakeTensorMode: shapes,
dtypes and devices, no storage) on a fake CUDA device, and the forward pass runs with CUDA
autocast switched on at its low level (the `torch.autocast` context refuses without a GPU):
every op then runs under the run's real mixed-precision policy, so each tensor carries the
dtype it would have on the GPU (bf16 matmul inputs, fp32 norms and softmax, the bf16 copies of
the weights autocast makes). A `saved_tensors_hooks` pack hook sees every tensor autograd
saves; its storage bytes are summed once per storage (a tensor saved by two ops, or a view of
one, is one allocation), parameters and buffers left out (they are the weights row).
Attention is counted as a GPU runs it: fused (memory-efficient) attention saves q, k, v, the
output and a log-sum-exp, never the L x L weights (on a fake GPU torch would pick its math
kernel, which keeps them).

Gradient checkpointing: a checkpointed call (a unit: a ResNet or transformer block, as the
model itself decides) keeps only its inputs in the forward pass and recomputes its inside during
the backward, one unit at a time; so the checkpointed figure is what is saved outside the units,
plus the units' inputs, plus the largest unit's inside. The units are found by handing the
model a checkpoint function that runs each call plainly and notes it.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SavedTensors:
    """Bytes autograd keeps between the forward and the backward pass."""

    total_bytes: int  # no checkpointing
    kept_with_checkpointing: int  # checkpointing: outside the units + the units' inputs
    largest_unit_bytes: int  # checkpointing: one unit's inside while it is recomputed
    forward_flops: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)  # no checkpointing

    @property
    def checkpointed_bytes(self) -> int:
        return self.kept_with_checkpointing + self.largest_unit_bytes


class FusedAttention(TorchFunctionMode):
    """scaled_dot_product_attention as a GPU's memory-efficient kernel (what it saves for the
    backward), cast to the autocast dtype as autocast casts SDPA's inputs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not nn.functional.scaled_dot_product_attention or args[0].dim() != 4:
            return func(*args, **kwargs)
        query, key, value = args[:3]  # (B, heads, L, head_dim)
        if torch.is_autocast_enabled(query.device.type):
            dtype = torch.get_autocast_dtype(query.device.type)
            query, key, value = (t.to(dtype) for t in (query, key, value))
        bias = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        if bias is not None and bias.dtype == torch.bool:  # a keep-mask as an additive bias
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=bias.device).masked_fill(~bias, float("-inf"))
        elif bias is not None:
            bias = bias.to(query.dtype)
        if bias is not None:  # the kernel takes (B, heads, Lq, Lk); a broadcast view costs nothing
            bias = bias.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        output, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, bias, True, kwargs.get("dropout_p", 0.0), kwargs.get("is_causal", False), scale=kwargs.get("scale")
        )
        return output


@contextlib.contextmanager
def fake_device(device_type: str = "cuda") -> Iterator[None]:
    """Everything built inside is a fake tensor on `device_type` (no memory; no GPU needed)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True), torch.device(device_type):
        yield


@contextlib.contextmanager
def mixed_precision(device_type: str, precision: str) -> Iterator[None]:
    """Autocast as `torch.autocast(device_type, dtype)` sets it up, without its check that the
    device is present (fake CUDA tensors on a machine without one). precision: no | bf16 | fp16."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        yield
        return
    enabled, previous = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    torch.set_autocast_enabled(device_type, True)
    torch.set_autocast_dtype(device_type, dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled(device_type, enabled)
        torch.set_autocast_dtype(device_type, previous)


def storage_key(tensor: torch.Tensor) -> int:
    # The storage's C++ identity: the same for every view of it, for real and fake tensors.
    return tensor.untyped_storage()._cdata


class SavedTensorLedger:
    """Records the storages autograd saves, and where (outside or inside which unit)."""

    def __init__(self, excluded: set[int]):
        self.excluded = excluded  # parameters and buffers
        self.bytes: dict[int, int] = {}
        self.dtypes: dict[int, str] = {}
        self.units_of: dict[int, set[str | None]] = defaultdict(set)  # storage -> where it was saved (None: outside)
        self.unit_inputs: set[int] = set()
        self.current: str | None = None  # the checkpointed call running now
        self.calls = 0
        self.alive: list[torch.Tensor] = []  # keeps storages alive: no key is reused while measuring

    def note(self, tensor: torch.Tensor) -> int:
        key = storage_key(tensor)
        if key not in self.bytes:
            self.bytes[key] = tensor.untyped_storage().nbytes()
            self.dtypes[key] = str(tensor.dtype).removeprefix("torch.")
            self.alive.append(tensor)
        return key

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = storage_key(tensor)
        if key not in self.excluded:
            self.note(tensor)
            self.units_of[key].add(self.current)
        return tensor

    def run_unit(self, module: nn.Module, *args):
        """A checkpointed call, run plainly: what it saves inside is noted as this call's,
        its tensor arguments as what the checkpoint would keep. A unit inside a unit is part of it."""
        if self.current is not None:
            return module(*args)
        self.calls += 1
        self.current = f"{type(module).__name__} #{self.calls}"
        for item in args:
            if isinstance(item, torch.Tensor) and storage_key(item) not in self.excluded:
                self.unit_inputs.add(self.note(item))
        try:
            return module(*args)
        finally:
            self.current = None

    def result(self, flops: int) -> SavedTensors:
        saved = self.units_of
        by_dtype: dict[str, int] = defaultdict(int)
        for key in saved:
            by_dtype[self.dtypes[key]] += self.bytes[key]
        # Kept with checkpointing: whatever is saved outside the units (a unit's output, say,
        # saved by the next op) and the units' inputs; the rest lives only inside one unit.
        kept = {key for key, where in saved.items() if None in where} | self.unit_inputs
        inside: dict[str, int] = defaultdict(int)
        for key, where in saved.items():
            if key not in kept:
                for unit in where:
                    inside[unit] += self.bytes[key]
        return SavedTensors(
            total_bytes=sum(self.bytes[key] for key in saved),
            kept_with_checkpointing=sum(self.bytes[key] for key in kept),
            largest_unit_bytes=max(inside.values(), default=0),
            forward_flops=flops,
            bytes_by_dtype=dict(by_dtype),
        )


def measure_saved_tensors(forward: Callable[[], object], root: nn.Module, checkpointed: nn.Module | None = None) -> SavedTensors:
    """Runs `forward` once (fake or real tensors alike), recording what autograd saves and
    counting FLOPs. `checkpointed`: the model whose gradient checkpointing the stage turns on
    (diffusers' `enable_gradient_checkpointing(func)`, which hands each checkpointed call to
    `func(module, *args)`); its calls are recorded as the units checkpointing would recompute."""
    from torch.utils.flop_counter import FlopCounterMode

    excluded = {storage_key(t) for t in (*root.parameters(), *root.buffers())}
    ledger = SavedTensorLedger(excluded)
    if checkpointed is not None:
        checkpointed.enable_gradient_checkpointing(ledger.run_unit)
    try:
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(ledger.pack, lambda t: t):
            output = forward()
    finally:
        if checkpointed is not None:
            checkpointed.disable_gradient_checkpointing()
    del output
    return ledger.result(counter.get_total_flops())
