"""FTRL-Proximal, the per-coordinate optimizer for the wide (linear) part of Wide&Deep.

torch ships no FTRL. This one follows Algorithm 1 of McMahan et al., "Ad Click
Prediction: a View from the Trenches" (KDD 2013), for dense gradients and for the sparse
gradients of ``nn.Embedding``/``nn.EmbeddingBag(..., sparse=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


def _ftrl_weights(z: Tensor, n: Tensor, lr: float, beta: float, l1: float, l2: float) -> Tensor:
    """The closed-form weights of FTRL-Proximal: 0 where ``|z| <= l1``, else the shrunk value."""
    shrunk = -(z - torch.sign(z) * l1) / ((beta + n.sqrt()) / lr + l2)
    return torch.where(z.abs() <= l1, torch.zeros_like(z), shrunk)


def _ftrl_update(
    w: Tensor, g: Tensor, z: Tensor, n: Tensor, lr: float, beta: float, l1: float, l2: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One FTRL-Proximal step on tensors of one shape and dtype; returns new ``(w, z, n)``."""
    n_new = n + g * g
    sigma = (n_new.sqrt() - n.sqrt()) / lr
    z_new = z + g - sigma * w
    return _ftrl_weights(z_new, n_new, lr, beta, l1, l2), z_new, n_new


class FTRL(torch.optim.Optimizer):
    r"""Per-coordinate FTRL-Proximal (McMahan et al., KDD 2013, Algorithm 1).

    For every coordinate ``i`` with gradient ``g`` the step is::

        sigma = (sqrt(n + g^2) - sqrt(n)) / lr
        z    += g - sigma * w
        n    += g^2
        w     = 0                                                    if |z| <= l1
        w     = -(z - sign(z) * l1) / ((beta + sqrt(n)) / lr + l2)   otherwise

    ``z`` and ``n`` are kept per parameter in ``state[p]`` (zeros at first). The
    weights are a *function of z and n*: after its first step a coordinate's value is
    ``w(z, n)``, and the parameter's initial value matters only through the first
    ``sigma * w`` term. Initialise the parameters FTRL trains at zero, as the paper does and
    as the wide part of Wide&Deep usually is. With ``l1 > 0`` many weights end exactly at 0.

    Only coordinates with a nonzero gradient are updated, for dense gradients and sparse
    COO gradients (as from ``nn.EmbeddingBag(..., sparse=True)``, coalesced first so that
    duplicate indices are summed) alike: a zero gradient would leave ``z`` and ``n``
    unchanged anyway, and skipping it makes a step over a large, sparsely hit wide table
    cost what the batch touches. Parameters may be float32, float16 or bfloat16 (or
    float64) on any device; the state and the arithmetic are float32 (float64 for float64
    parameters) and the new weights are cast to the parameter's dtype.

    Args:
        params: iterable of parameters or of param-group dicts.
        lr: ``alpha``, the per-coordinate learning-rate scale; > 0.
        beta: smooths the learning rate at the start; >= 0.
        l1: ``lambda1``, L1 strength; >= 0. Larger values give more exact zeros.
        l2: ``lambda2``, L2 strength; >= 0.

    Example::

        >>> wide = torch.nn.EmbeddingBag(1000, 1, mode="sum", sparse=True)
        >>> _ = torch.nn.init.zeros_(wide.weight)  # FTRL's usual start
        >>> opt = FTRL(wide.parameters(), lr=0.05, beta=1.0, l1=1e-3, l2=1e-3)
        >>> x = torch.tensor([[3, 17], [3, 999]])  # (B, F) feature ids
        >>> loss = torch.nn.functional.binary_cross_entropy_with_logits(
        ...     wide(x).squeeze(-1), torch.tensor([1.0, 0.0]))
        >>> loss.backward()
        >>> opt.step()
        >>> opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.05,
        beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 0.0,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"FTRL: lr (alpha) must be > 0, got {lr!r}")
        if not beta >= 0.0:
            raise ValueError(f"FTRL: beta must be >= 0, got {beta!r}")
        if not l1 >= 0.0:
            raise ValueError(f"FTRL: l1 (lambda1) must be >= 0, got {l1!r}")
        if not l2 >= 0.0:
            raise ValueError(f"FTRL: l2 (lambda2) must be >= 0, got {l2!r}")
        super().__init__(params, dict(lr=lr, beta=beta, l1=l1, l2=l2))

    def _init_state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if not state:
            dtype = torch.promote_types(p.dtype, torch.float32)  # float32, or float64 for float64
            state["z"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state["n"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Do one FTRL-Proximal step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            hp = (group["lr"], group["beta"], group["l1"], group["l2"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if torch.is_complex(p):
                    raise RuntimeError("FTRL does not support complex parameters")
                state = self._init_state(p)
                z, n = state["z"], state["n"]
                if p.grad.is_sparse:
                    grad = p.grad.coalesce()  # duplicate indices summed
                    index, values = tuple(grad.indices()), grad.values()
                else:
                    # A zero gradient leaves z, n and w as they are, so only the touched
                    # coordinates are computed: a large, sparsely hit wide table costs
                    # what the batch touches, not its full size.
                    index = p.grad.nonzero(as_tuple=True)
                    values = p.grad[index]
                self._update_at(p, index, values, z, n, *hp)
        return loss

    @staticmethod
    def _update_at(
        p: Tensor, index: tuple[Tensor, ...], values: Tensor, z: Tensor, n: Tensor,
        lr: float, beta: float, l1: float, l2: float,
    ) -> None:  # fmt: skip
        """Update the coordinates (or rows) ``index`` with gradient ``values``."""
        if values.numel() == 0:
            return
        dtype = z.dtype
        w, z_new, n_new = _ftrl_update(p[index].to(dtype), values.to(dtype), z[index], n[index], lr, beta, l1, l2)
        z.index_put_(index, z_new)
        n.index_put_(index, n_new)
        p.index_put_(index, w.to(p.dtype))
