"""The dry run's memory table: training state per GPU (weights, gradients, optimizer, EMA,
divided where the run shards them) and the activations autograd keeps."""

from __future__ import annotations

from typing import NamedTuple

from ldm.training.activation_estimate import SavedTensors
from ldm.training.shard_plan import EMA, GRADIENTS, OPTIMIZER, WEIGHTS, Sharding

GIB = 2**30
FP32 = 4
# The optimizer row, by train.optimizer (ldm.training.optimizers.state_bytes).
OPTIMIZER_ROWS = {
    "adamw": "optimizer (AdamW, 2 fp32 states)",
    "adamw8bit": "optimizer (AdamW 8-bit states)",
    "adafactor": "optimizer (Adafactor, factored)",
}


class StateSizes(NamedTuple):
    trainable: int  # parameters
    frozen: int  # parameters
    optimizer_bytes: int  # the whole optimizer state, unsharded


def state_rows(sizes: StateSizes, optimizer_row: str, ema_decay, sharding: Sharding, processes: int) -> dict[str, int]:
    """Bytes per GPU of each part of the training state. Weights stay fp32 under autocast; the
    trained network's share is divided by the shard group where `sharding` divides it, the
    frozen networks are whole on every GPU."""
    group = (sharding.group or processes) if sharding.name != "none" else 1

    def share(row: str, label: str, size: int) -> tuple[str, int]:
        if group > 1 and sharding.divides(row):
            return f"{label} / {group}", -(-size // group)
        return label, size

    ema = "EMA (fp32)" if ema_decay else "EMA (off: train.ema_decay null)"
    rows = [
        share(WEIGHTS, "weights, trained (fp32)", sizes.trainable * FP32),
        ("weights, frozen (fp32)", sizes.frozen * FP32),
        share(GRADIENTS, "gradients (fp32)", sizes.trainable * FP32),
        share(OPTIMIZER, optimizer_row, sizes.optimizer_bytes),
        share(EMA, ema, sizes.trainable * FP32 if ema_decay else 0),
    ]
    return dict(rows)


def memory_lines(fixed: dict[str, int], saved: SavedTensors, checkpointing: bool, checkpointing_on: bool, precision: str) -> list[str]:
    """The table: the state rows, then the activations with and without gradient checkpointing,
    each with its total."""
    fixed_total = sum(fixed.values())
    lines = [f"  {name:<40} {size / GIB:8.2f} GiB" for name, size in fixed.items()]
    plain = saved.total_bytes
    lines.append(f"  {'activations, no checkpointing':<40} {plain / GIB:8.2f} GiB   total {(fixed_total + plain) / GIB:.2f} GiB")
    if checkpointing:
        kept = saved.checkpointed_bytes
        lines.append(f"  {'activations, gradient checkpointing':<40} {kept / GIB:8.2f} GiB   total {(fixed_total + kept) / GIB:.2f} GiB")
        lines.append(f"  (train.gradient_checkpointing is {'on' if checkpointing_on else 'off'})")
    else:
        lines.append("  (this stage does not use gradient checkpointing)")
    dtypes = ", ".join(f"{dtype} {size / GIB:.2f} GiB" for dtype, size in sorted(saved.bytes_by_dtype.items(), key=lambda item: -item[1]))
    autocast = f"{precision} autocast" if precision != "no" else "fp32 (no autocast)"
    lines.append(
        f"  activations: the tensors autograd saves for the backward in one forward pass on a fake GPU under "
        f"{autocast} ({dtypes or 'none'}), fused attention; framework buffers, CUDA context, fragmentation"
        f" and FSDP/ZeRO-3's gathered weights of one block not included"
    )
    return lines
