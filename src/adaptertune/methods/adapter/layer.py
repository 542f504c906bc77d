"""The AdapterTune module: a zero-initialized residual low-rank bottleneck (paper: arXiv 2603.14706).

After each chosen transformer block ``l``::

    x_{l+1} = h_l + alpha * W_up(act(W_down h_l))        h_l = Block_l(x_l), all tokens

``W_down`` is Xavier-uniform with zero bias and ``W_up`` is zero (weight and bias), so at step 0 the
adapted network computes exactly the pretrained function. :class:`AdapterSlot` runs a block's active adapter
on the block's output (a :class:`~adaptertune.methods.slots.BlockSlot` under ``block.adapters``).

A nested adapter (``adapter.nested``, :mod:`.nested`) runs its first r units only: r is the rank sampled for
the training step (``before_train_step``, called by the training loop) in training mode, else the rank set by
``set_active_rank`` (None: all of them; 0: none, the adapter adds nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..slots import BlockSlot
from .nested import check_rank, sample_rank

__all__ = ["Adapter", "AdapterSlot"]

_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "identity": nn.Identity}


class Adapter(nn.Module):
    """Bottleneck ``alpha * W_up(act(W_down h))``: (B, N, d) -> (B, N, d)."""

    def __init__(
        self,
        dim: int,
        rank: int,
        alpha: float = 1.0,
        init: str = "zero",
        dropout: float = 0.0,
        act: str = "gelu",
        grid: tuple[int, ...] = (),
        scale_at: Callable[[int], float] | None = None,
    ) -> None:
        """``grid``: the ranks a nested adapter trains (empty: not nested); ``scale_at(r)``: its output scale
        at rank r (``alpha`` is the scale at ``rank``)."""
        super().__init__()
        self.dim, self.rank, self.alpha, self.init = dim, rank, alpha, init
        self.grid, self.scale_at = tuple(grid), scale_at
        self.seed = 0  # the run's seed: with the step index it picks each step's rank (Method.prepare_fit sets it)
        self.step_rank: int | None = None  # the rank of the current training step (nested, training mode)
        self.active_rank: int | None = None  # the rank outside training (None: full)
        self.down = nn.Linear(dim, rank)
        self.act = _ACTS[act]()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(rank, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)
        if self.init == "zero":
            nn.init.zeros_(self.up.weight)  # the method: the adapter adds exactly 0 at step 0
        elif self.init == "small":
            nn.init.normal_(self.up.weight, std=1e-4)
        else:  # "random": the naive baseline the paper argues against
            nn.init.xavier_uniform_(self.up.weight)

    def before_train_step(self, step: int) -> None:
        """Draw the rank optimizer step ``step`` trains (nested adapters; the training loop calls it)."""
        if self.grid:
            self.step_rank = sample_rank(self.grid, self.seed, step)

    def set_active_rank(self, rank: int | None) -> None:
        """Run the first ``rank`` units outside training (None: all; 0: none). Nested adapters only.

        Raises:
            ConfigError: the adapter is not nested, or ``rank`` is not in 0..its rank.
        """
        if not self.grid:
            raise ConfigError(f"This adapter is not nested (`adapter.nested` false); it runs at rank {self.rank}.")
        self.active_rank = None if rank is None else check_rank(rank, self.rank, "adapter rank", allow_zero=True)

    def current_rank(self) -> int:
        """The number of bottleneck units the next forward runs."""
        if self.training and self.step_rank is not None:
            return self.step_rank
        return self.rank if self.active_rank is None else self.active_rank

    def _leading(self, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(W_down, b_down, W_up) of the first ``r`` units and their scale; ``W_up[:, :r]`` copied contiguous, so
        the matmuls read the same memory layout as a plain rank-r adapter's (bitwise the same outputs)."""
        w = self.up.weight[:, :r].contiguous()
        return self.down.weight[:r], self.down.bias[:r], w, self.scale_at(r)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r = self.current_rank()
        if r != self.rank:
            return self._forward_leading(h, r)
        z = self.act(self.down(h))  # (B, N, r)
        if self.drop.p > 0:
            z = self.drop(z)
        z = self.up(z)
        return z if self.alpha == 1.0 else z * self.alpha  # no extra pass over (B, N, d) at the default alpha

    def _forward_leading(self, h: torch.Tensor, r: int) -> torch.Tensor:
        if r == 0:
            return torch.zeros_like(h)
        w_down, b_down, w_up, scale = self._leading(r)
        z = self.act(F.linear(h, w_down, b_down))  # (B, N, r): nn.Linear's own call on the leading rows
        if self.drop.p > 0:
            z = self.drop(z)
        z = F.linear(z, w_up, self.up.bias)
        return z if scale == 1.0 else z * scale

    def residual(self, h: torch.Tensor) -> torch.Tensor:
        """``h + forward(h)`` in the dtype of ``h``; with GELU, no active dropout and no autocast, one fused
        autograd function."""
        r = self.current_rank()
        if r == 0:
            return h
        fusable = (
            isinstance(self.act, nn.GELU)
            and self.act.approximate == "none"
            and (self.drop.p == 0 or not self.training)
            and h.dtype == self.down.weight.dtype
            and not torch.is_autocast_enabled(h.device.type)
        )
        if fusable and r != self.rank:
            w_down, b_down, w_up, scale = self._leading(r)
            return _ResidualAdapter.apply(h, w_down, b_down, w_up, self.up.bias, scale)
        if fusable:
            return _ResidualAdapter.apply(
                h, self.down.weight, self.down.bias, self.up.weight, self.up.bias, self.alpha
            )
        # autocast runs the adapter's linears in bf16/fp16 while the residual stream ``h`` stays fp32: cast the
        # update up to the stream's dtype before adding, so the stream keeps its dtype and 0 + h is h exactly
        return self.forward(h).to(h.dtype).add_(h)  # in place into the adapter's fresh output

    def extra_repr(self) -> str:
        nested = f", nested={','.join(map(str, self.grid))}" if self.grid else ""
        return f"dim={self.dim}, rank={self.rank}, alpha={self.alpha:g}, init={self.init}{nested}"


class _ResidualAdapter(torch.autograd.Function):
    """``h + alpha * (gelu(h W_d^T + b_d) W_u^T + b_u)`` over the (B*N, d) rows, with a written-out backward.

    ``h`` is the accumulator of the up-projection's ``addmm`` and the gradient of ``h`` accumulates inside the
    down-projection's backward ``addmm``, so neither direction writes an extra (B*N, d) buffer; only ``h`` and
    the (B*N, r) pre-activation are saved. Same values as the module path.
    """

    @staticmethod
    def forward(ctx, h, w_down, b_down, w_up, b_up, alpha: float):  # type: ignore[override]
        h2 = h.reshape(-1, h.shape[-1])  # (M, d)
        a = torch.addmm(b_down, h2, w_down.t())  # (M, r)
        out = torch.addmm(h2, F.gelu(a), w_up.t(), alpha=alpha)  # h + alpha * z W_u^T
        out.add_(b_up, alpha=alpha)
        ctx.save_for_backward(h2, a, w_down, w_up)
        ctx.alpha = alpha
        return out.view(h.shape)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        h2, a, w_down, w_up = ctx.saved_tensors
        need_h, need_wd, need_bd, need_wu, need_bu, _ = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])  # (M, d)
        gs = g2 if ctx.alpha == 1.0 else g2 * ctx.alpha  # gradient at the up-projection's output
        grad_wu = gs.t().mm(F.gelu(a)) if need_wu else None
        grad_bu = gs.sum(0) if need_bu else None
        da = torch.ops.aten.gelu_backward(gs.mm(w_up), a)  # (M, r)
        grad_wd = da.t().mm(h2) if need_wd else None
        grad_bd = da.sum(0) if need_bd else None
        grad_h = torch.addmm(g2, da, w_down).view(g.shape) if need_h else None  # identity path + adapter path
        return grad_h, grad_wd, grad_bd, grad_wu, grad_bu, None


class AdapterSlot(BlockSlot):
    """Serial adapter sets of one block (``block.adapters``): the active one's residual on the block's output."""

    attr = "adapters"
    kind = "serial adapter"

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return module.residual(output)  # (B, N, d) residual on all tokens
