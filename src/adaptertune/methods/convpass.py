"""Convpass (Jie and Deng, 2022): a convolutional bottleneck beside the attention and beside the MLP of every block.

For a timm ViT block (``h = norm1(x)``, ``g = norm2(x1)``)::

    x1 = x  + dp1(ls1(attn(h))) + dp1'(s * CP(h))
    x2 = x1 + dp2(ls2(mlp(g)))  + dp2'(s * CP'(g))
    CP = up . dropout . QGELU . conv3x3 . QGELU . down          QGELU(z) = z * sigmoid(1.702 z)

The branch is added outside the LayerScale (as METHODS.md's ``x1 = x + a + s CP(h)`` and the original code, which
has no LayerScale), and through the block's own drop-path module drawn separately (``dp1'``: the original calls
``drop_path`` on the branch on its own). The 3x3 convolution runs over the patch grid; the prefix tokens (class,
register) go through the same convolution as zero-padded 1x1 images, i.e. its centre tap alone (computed as that
r x r matmul). Init: ``down`` Xavier-uniform, zero bias;
the convolution the identity on its centre tap (``conv_init: identity``, zero bias; the original's default, which
it also offers as Xavier-uniform: ``conv_init: xavier``); ``up`` zero, so the model starts exactly at the
backbone's logits. Not mergeable (the activations are non-linear).

Hooks: a forward pre-hook on ``block.attn`` (``block.mlp``) keeps its input ``h`` (``g``); a forward hook on
``block.drop_path1`` (``drop_path2``) adds the branch. A block's sets live in ``block.convpass``
(:class:`ConvpassSlot`), so the backbone's ``state_dict`` keys never change and tasks share one backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config_checks import _as_choice, _as_float, _as_int, _as_probability
from ..errors import ConfigError
from ..vit import backbone_blocks, backbone_width, patch_tokens
from .flops import BlockCost, Extra, StepFlops, ViTGeometry, count_step, placed
from .registry import Method, register_method
from .slots import BlockSlot

__all__ = ["ConvpassBranch", "ConvpassMethod", "ConvpassOptions", "ConvpassPair", "ConvpassSlot", "quick_gelu"]

CONV_INITS = ("identity", "xavier")
_HOOKED = ("norm1", "attn", "drop_path1", "norm2", "mlp", "drop_path2")  # the timm Block parts the hooks need


@dataclass
class ConvpassOptions:
    """Convpass's options (YAML/CLI ``convpass.*``, or the legacy ``adapter.*``).

    Args:
        rank: bottleneck width r (the convolution's channels).
        scale: s, the branch's output scale. The original code's default is 1 (its per-dataset VTAB configs pick
            0.01, 0.1, 1 or 10).
        dropout: dropout before the up-projection during training.
        conv_init: ``identity`` (the centre tap is the identity) or ``xavier``.
    """

    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1
    conv_init: str = "identity"
    section: ClassVar[str] = "convpass"  # the method's config section, for messages

    def __post_init__(self) -> None:
        self.rank = _as_int(f"{self.section}.rank", self.rank, minimum=1)
        self.scale = _as_float(f"{self.section}.scale", self.scale)
        self.dropout = _as_probability(f"{self.section}.dropout", self.dropout)
        self.conv_init = _as_choice(f"{self.section}.conv_init", self.conv_init, CONV_INITS)


def quick_gelu(z: torch.Tensor) -> torch.Tensor:
    """``z * sigmoid(1.702 z)`` (CLIP's QuickGELU, the original's activation)."""
    return z * torch.sigmoid(1.702 * z)


class ConvpassBranch(nn.Module):
    """``CP``: tokens (B, T, D) -> (B, T, D); the T - prefix patch tokens form a ``grid`` for the 3x3 convolution."""

    def __init__(
        self, dim: int, rank: int, grid: tuple[int, int], prefix: int, dropout: float, conv_init: str
    ) -> None:
        super().__init__()
        self.grid, self.prefix = tuple(grid), prefix
        self.down = nn.Linear(dim, rank)
        self.conv = nn.Conv2d(rank, rank, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(rank, dim)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        if conv_init == "identity":
            nn.init.zeros_(self.conv.weight)
            with torch.no_grad():
                self.conv.weight[:, :, 1, 1] = torch.eye(rank)
        else:
            nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.up.weight)  # the branch adds exactly 0 at step 0
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        (b, t, _), (gh, gw), p = h.shape, self.grid, self.prefix
        if t - p != gh * gw:
            raise ConfigError(
                f"Convpass was built for a {gh}x{gw} patch grid + {p} prefix tokens, got {t} tokens; build it for "
                "the image size it runs at."
            )
        z = quick_gelu(self.down(h))  # (B, T, r)
        r = z.shape[-1]
        patches = self.conv(z[:, p:].reshape(b, gh, gw, r).permute(0, 3, 1, 2))  # (B, r, gh, gw)
        parts = [patches.permute(0, 2, 3, 1).reshape(b, gh * gw, r)]
        if p:  # each prefix token as a 1x1 image, zero-padded: only the centre tap reads it (an r x r matmul)
            parts.insert(0, F.linear(z[:, :p], self.conv.weight[:, :, 1, 1], self.conv.bias))
        z = torch.cat(parts, dim=1) if p else parts[0]
        return self.up(self.drop(quick_gelu(z)))

    def extra_repr(self) -> str:
        return f"grid={self.grid}, prefix={self.prefix}"


class ConvpassPair(nn.Module):
    """One task's two branches in one block: ``attn`` (on ``norm1``'s output) and ``mlp`` (on ``norm2``'s)."""

    def __init__(self, dim: int, grid: tuple[int, int], prefix: int, options: ConvpassOptions) -> None:
        super().__init__()
        self.scale = options.scale
        args = (dim, options.rank, grid, prefix, options.dropout, options.conv_init)
        self.attn, self.mlp = ConvpassBranch(*args), ConvpassBranch(*args)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class ConvpassSlot(BlockSlot):
    """Convpass sets of one block (``block.convpass``): the active one's branches beside the attention and MLP."""

    attr = "convpass"
    kind = "convpass"

    def __init__(self, block: nn.Module) -> None:
        super().__init__(block)
        self._inputs: dict[str, torch.Tensor] = {}  # h and g of the running forward, until their branch is added

    @classmethod
    def _parts(cls, block: nn.Module) -> dict[str, nn.Module]:
        if missing := [n for n in _HOOKED if not isinstance(getattr(block, n, None), nn.Module)]:
            raise ConfigError(
                f"Block {type(block).__name__} has no {', '.join(missing)}; Convpass needs a timm ViT block."
            )
        return {n: getattr(block, n) for n in _HOOKED}

    @classmethod
    def pre_hook_targets(cls, block: nn.Module) -> dict[str, nn.Module]:
        parts = cls._parts(block)
        return {"attn": parts["attn"], "mlp": parts["mlp"]}  # keep h (g), the input of attn (mlp)

    @classmethod
    def hook_targets(cls, block: nn.Module) -> dict[str, nn.Module]:
        parts = cls._parts(block)
        return {"attn": parts["drop_path1"], "mlp": parts["drop_path2"]}  # add the branch to the residual branch

    def enter(self, name: str, target: nn.Module, args: tuple) -> None:
        self._inputs[name] = args[0]

    def run_at(self, name: str, drop_path: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        pair = self[self.active]
        branch = getattr(pair, name)(self._inputs.pop(name)) * pair.scale
        return out + drop_path.forward(branch).to(out.dtype)  # .forward: a draw of its own, no hook re-entry


def convpass_sets(model: nn.Module, options: ConvpassOptions) -> dict[int, ConvpassPair]:
    """Block index -> that block's :class:`ConvpassPair` for one task (fresh init)."""
    blocks = backbone_blocks(model)
    d = backbone_width(model)
    grid, tokens = getattr(getattr(model, "patch_embed", None), "grid_size", None), patch_tokens(model)
    if grid is None or tokens is None:
        raise ConfigError(f"Convpass needs a patch grid (`patch_embed.grid_size`); {type(model).__name__} has none.")
    if options.rank > d:
        raise ConfigError(f"`adapter.rank` {options.rank} is larger than the backbone width {d}; use 1..{d}.")
    return {i: ConvpassPair(d, grid, tokens.prefix, options) for i in range(len(blocks))}


class ConvpassMethod(Method):
    """Convpass at rank 8 (default): two branches per block, 2L(2Dr + 9r^2 + 2r + D) parameters, 327,552 on
    ViT-B/16. Scale s = 1 by default (the original code's default)."""

    name = "convpass"
    description = "Convpass: frozen backbone + zero-init conv bottlenecks beside attention and MLP (rank 8) + head"
    options = ConvpassOptions
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}  # the original's AdamW recipe; Mai et al.'s grid around it
    lr_grid = (1e-3, 3e-3, 1e-2)
    shares_backbone = True
    slot = ConvpassSlot

    def slot_modules(self, model: nn.Module, options: ConvpassOptions) -> dict[int, nn.Module]:
        return convpass_sets(model, options)

    def step_flops(self, geom: ViTGeometry, options: ConvpassOptions) -> StepFlops:
        """Per branch: down and up on every token beside the sub-layer; the 3x3 conv as its matmul equivalent
        ``(9r, r)`` on the patch grid and the centre tap ``(r, r)`` on the prefix tokens. The conv reads the
        trained down-projection, so its input always needs a gradient: it is counted at the site after the
        branch (``attn_out`` / ``mlp_out``), whose input does too."""
        d, r, prefix = geom.dim, options.rank, geom.tokens - geom.patches
        extras: list[Extra] = []
        for site in ("attn", "mlp"):
            extras += [Extra(site, ((d, r), (r, d))), Extra(f"{site}_out", ((9 * r, r),), rows=geom.patches)]
            extras += [Extra(f"{site}_out", ((r, r),), rows=prefix)] if prefix else []
        return count_step(geom, placed(geom, range(geom.depth), BlockCost(extras=tuple(extras))))

    def trainable_params(self, geom: ViTGeometry, options: ConvpassOptions, num_classes: int) -> int:
        d, r = geom.dim, options.rank  # down D r + r, conv 9 r^2 + r, up r D + D; two branches per block
        return 2 * geom.depth * (2 * d * r + 9 * r * r + 2 * r + d) + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: ConvpassOptions) -> int:
        return 0  # branches in every block


register_method(ConvpassMethod())
