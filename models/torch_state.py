"""Tensor-only state of a ``torch.nn.Module`` and its optimiser, for strategies built on networks.

``network_state`` flattens a module's weights (``<prefix>.<param>``) and its optimiser's per-parameter
slots (``optim.<prefix>.<param>.<slot>``, e.g. Adam's moments and step) into one dict of tensors;
``load_network_state`` puts them back, so a reloaded learner continues training exactly as the
original would have. Nothing is pickled.
"""

from __future__ import annotations

import torch
from torch import nn


def network_state(net: nn.Module, optimizer: torch.optim.Optimizer | None, prefix: str = "net") -> dict[str, torch.Tensor]:
    state = {f"{prefix}.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    if optimizer is not None:
        names = {id(p): n for n, p in net.named_parameters()}
        for param, slots in optimizer.state.items():
            if id(param) not in names:
                continue  # a parameter of another module sharing the optimiser
            for key, value in slots.items():
                state[f"optim.{prefix}.{names[id(param)]}.{key}"] = torch.as_tensor(value).detach().clone()
    return state


def load_network_state(
    net: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, torch.Tensor],
    device: torch.device,
    prefix: str = "net",
) -> None:
    """Load what :func:`network_state` wrote under ``prefix``; other keys are left alone."""
    own = f"{prefix}."
    net.load_state_dict({k.removeprefix(own): v for k, v in state.items() if k.startswith(own)})
    net.to(device)
    if optimizer is None:
        return
    params = dict(net.named_parameters())
    for p in params.values():
        optimizer.state.pop(p, None)
    opt_prefix = f"optim.{prefix}."
    for key, value in state.items():
        if not key.startswith(opt_prefix):
            continue
        name, slot = key.removeprefix(opt_prefix).rsplit(".", 1)
        if name not in params:
            raise ValueError(f"optimizer state for unknown parameter {name!r}")
        target = value.detach().clone()
        optimizer.state[params[name]][slot] = target.to(_slot_device(optimizer, slot, device))


def move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for slots in optimizer.state.values():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                slots[key] = value.to(_slot_device(optimizer, key, device))


def _slot_device(optimizer: torch.optim.Optimizer, slot: str, device: torch.device) -> torch.device:
    """Adam keeps ``step`` on the CPU unless it runs fused or capturable (``models.optim`` runs it
    fused): then every slot lives with its parameter."""
    on_param = optimizer.defaults.get("fused") or optimizer.defaults.get("capturable")
    return device if slot != "step" or on_param else torch.device("cpu")
