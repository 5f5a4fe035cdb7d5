"""Two optimizers stepped as one: the paper's FTRL for the wide part beside Adam for the deep part.

Lightning's automatic optimisation (mixed-precision loss scaling, gradient clipping,
gradient accumulation) expects one optimizer per step. Its manual mode supports several
but gives up clipping and accumulation. ``JointOptimizer`` keeps the automatic mode: it
exposes the param groups of its parts as its own (the same dict objects, so schedulers
and GradScaler act on the real groups) and steps every part after one closure call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer


class JointOptimizer(Optimizer):
    """Steps several optimizers over disjoint parameter sets as one optimizer."""

    def __init__(self, optimizers: Sequence[Optimizer]) -> None:
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("JointOptimizer: the optimizers must not share parameters")
        super().__init__(params, {})
        self.optimizers = list(optimizers)
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict["optimizers"]
        if len(states) != len(self.optimizers):
            raise ValueError(f"JointOptimizer: checkpoint holds {len(states)} optimizers, this one has {len(self.optimizers)}")
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]

    def __repr__(self) -> str:
        return f"JointOptimizer({', '.join(type(o).__name__ for o in self.optimizers)})"
