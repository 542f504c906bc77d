"""Analytic matmul FLOPs of one training step of a timm ViT (pure arithmetic), composed by each method.

A method states what it trains as one :class:`BlockCost` per block (tokens it adds, :class:`Extra` matmuls at
named :data:`SITES`, which frozen linears get weight gradients) and where gradients start, and
:func:`count_step` adds it up; :func:`step_flops` looks a method's formula
(:meth:`~adaptertune.methods.registry.Method.step_flops`) up by name. :class:`ViTGeometry` also carries what the
methods' parameter-count formulas need (:meth:`~adaptertune.methods.registry.Method.trainable_params`).

Only matrix products are counted (2 FLOPs per multiply-add), as in the PaLM / nanoGPT estimates: the patch
embedding, q/k/v, the two attention products, the output projection, the two MLP layers, a method's extra
matmuls (a convolution as its matmul equivalent) and the head. Norms, softmax, GELU, residual adds and
elementwise scales are left out (they are memory-bound, not FLOP-bound); torch's ``FlopCounterMode`` counts the
same operations, so the tests compare with it exactly.

A step is forward + backward through activations + weight gradients, where

- a layer's input gradient is computed only when its input depends on something trained (autograd builds no
  graph before the first trained tensor: a frozen prefix costs its forward only);
- a weight gradient is computed only for trained weights.

So for ``y = x W^T`` (``m`` rows, ``k -> n``) the forward costs ``2mkn``, the input gradient ``2mkn`` if ``x``
needs a gradient, the weight gradient ``2mkn`` if ``W`` trains. The attention products ``QK^T`` and ``AV``
(``4 N^2 d`` forward) cost twice that backward (a gradient for each operand) once q/k/v need gradients.

Example (AdapterTune: a rank-r bottleneck after the last two blocks)::

    cost = BlockCost(extras=(bottleneck("out", geom.dim, r),))
    count_step(geom, placed(geom, [geom.depth - 2, geom.depth - 1], cost))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..vit import backbone_blocks, backbone_width, classifier, mlp_hidden_width, patch_tokens, vit_parts

__all__ = [
    "LINEARS",
    "SITES",
    "BlockCost",
    "Extra",
    "StepFlops",
    "ViTGeometry",
    "bottleneck",
    "count_step",
    "flop_methods",
    "inference_flops",
    "low_rank",
    "placed",
    "step_flops",
    "vit_geometry",
]

LINEARS = ("qkv", "proj", "fc1", "fc2")

# Where a method's extra computation sits in a timm block ``x1 = x + proj(attn(qkv(norm1(x))))``,
# ``x2 = x1 + fc2(act(fc1(norm2(x1))))``, in the order the block runs; each reads one value and adds to one:
SITES = (
    "in",  # reads the block input x, adds to it (VPT-deep's prompts)
    "attn_in",  # reads norm1(x), adds to the attention's input (RepAdapter, SSF after norm1)
    "qkv",  # beside qkv: reads its input, adds to its output (LoRA, FacT, SSF on qkv's output)
    "attn",  # beside the attention branch: reads norm1(x), adds to the branch output (Convpass)
    "proj",  # beside proj: reads its input, adds to its output
    "attn_out",  # reads the attention branch's output, adds to it (Houlsby, DiffFit's gamma1)
    "mlp_in",  # reads norm2(x1), adds to the MLP's input (RepAdapter)
    "fc1",  # beside fc1
    "mlp",  # beside the MLP: reads norm2(x1), adds to the MLP output (AdaptFormer, Convpass)
    "fc2",  # beside fc2
    "mlp_out",  # reads the MLP's output, adds to it (Pfeiffer, Houlsby, DiffFit's gamma2)
    "out",  # reads the block output x2, adds to it (AdapterTune, Adapter+)
)


@dataclass(frozen=True)
class ViTGeometry:
    """What the FLOP and parameter counts of a plain ViT depend on (one image).

    Args:
        depth: number of transformer blocks.
        dim: token width d.
        mlp_hidden: hidden width of the MLP.
        tokens: tokens per image in the blocks (patches + class/register tokens).
        patches: patch tokens (rows of the patch-embedding matmul).
        patch_dim: inputs of one patch (channels * patch height * patch width).
        num_classes: outputs of the head (0: no head).
        qkv_bias: attn.qkv has a bias.
        patch_bias: the patch embedding has a bias.
        layer_scale: the blocks have LayerScale gammas (ls1, ls2).
        pos_tokens: rows of the position embedding (None: ``tokens``).
        norm_pre: a LayerNorm runs before the blocks.
    """

    depth: int
    dim: int
    mlp_hidden: int
    tokens: int
    patches: int
    patch_dim: int
    num_classes: int
    qkv_bias: bool = True
    patch_bias: bool = True
    layer_scale: bool = False
    pos_tokens: int | None = None
    norm_pre: bool = False

    def linear_shape(self, name: str) -> tuple[int, int]:
        """(inputs, outputs) of block linear ``name`` (one of :data:`LINEARS`)."""
        d, h = self.dim, self.mlp_hidden
        return {"qkv": (d, 3 * d), "proj": (d, d), "fc1": (d, h), "fc2": (h, d)}[_linear(name)]

    def linear_params(self, name: str, weight: bool = True, bias: bool = True) -> int:
        """Parameters of block linear ``name``: its weight and / or its bias."""
        k, n = self.linear_shape(name)
        has_bias = self.qkv_bias or name != "qkv"
        return k * n * weight + n * (bias and has_bias)

    def norm_params(self) -> int:
        """Norms of the backbone (per block norm1 and norm2, the final norm, the pre-norm), weight and bias."""
        return 2 * self.dim * (2 * self.depth + 1 + self.norm_pre)

    def bias_params(self) -> int:
        """Every ``*.bias`` of the backbone: the linears', the norms' and the patch embedding's (BitFit)."""
        linears = self.depth * sum(self.linear_params(n, weight=False) for n in LINEARS)
        return linears + self.norm_params() // 2 + self.dim * self.patch_bias

    def backbone_params(self) -> int:
        """Every parameter but the head's."""
        d = self.dim
        embed = self.patch_dim * d + d * self.patch_bias + (self.tokens - self.patches) * d
        embed += (self.tokens if self.pos_tokens is None else self.pos_tokens) * d
        block = sum(self.linear_params(n) for n in LINEARS) + 2 * d * self.layer_scale
        return embed + self.depth * block + self.norm_params()

    def head_params(self, num_classes: int) -> int:
        """A linear head on the d-wide features."""
        return (self.dim + 1) * num_classes


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step for one image, split by where they are spent.

    ``per_step`` holds the forward FLOPs a method spends once per step whatever the batch size (DoRA's weight
    norms ``||W + s B A||``, computed from the weights alone); it is not in :attr:`total` (one image's share of a
    step), and :meth:`scaled` adds it once.
    """

    forward: int
    backward_activations: int
    backward_weights: int
    per_step: int = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward_activations + self.backward_weights

    def scaled(self, n: int) -> StepFlops:
        """One step on ``n`` images (the per-step FLOPs counted once, in ``forward``)."""
        fwd = self.forward * n + self.per_step
        return StepFlops(fwd, self.backward_activations * n, self.backward_weights * n)


@dataclass(frozen=True)
class Extra:
    """A method's computation at one :data:`SITES` point of a block: a chain of matmuls ``x W_1^T W_2^T ...``.

    Args:
        site: where it reads and adds (:data:`SITES`).
        shapes: ``(inputs, outputs)`` of each matmul in the chain, e.g. ``((d, r), (r, d))`` for a bottleneck; a
            convolution as its matmul equivalent (a 3x3 conv on r channels: ``(9 * r, r)``, depthwise: ``(9, r)``).
            Empty: elementwise only (a trained scale / shift / bias / norm: no FLOPs, but gradients flow from
            here on).
        rows: rows of each matmul per image (None: the block's tokens).
        trained: its weights train (False: a frozen extra, which still costs its forward and input gradients).
    """

    site: str
    shapes: tuple[tuple[int, int], ...] = ()
    rows: int | None = None
    trained: bool = True

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ConfigError(f"Unknown FLOP site '{self.site}'; known: {', '.join(SITES)}.")


@dataclass(frozen=True)
class BlockCost:
    """What one block of a method costs beyond the frozen block.

    Args:
        extras: the method's computations in this block.
        trained: block linears whose own weights train (any of :data:`LINEARS`: full fine-tuning, selective).
        added_tokens: tokens the method adds to this block's sequence (VPT's prompts).
    """

    extras: tuple[Extra, ...] = ()
    trained: frozenset[str] = field(default_factory=frozenset)
    added_tokens: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "trained", frozenset(_linear(n) for n in self.trained))


FROZEN = BlockCost()


def _linear(name: str) -> str:
    if name not in LINEARS:
        raise ConfigError(f"Unknown block linear '{name}'; known: {', '.join(LINEARS)}.")
    return name


def bottleneck(site: str, dim: int, rank: int) -> Extra:
    """A trained ``W_up act(W_down x)`` of width ``rank`` at ``site``: two matmuls ``dim -> rank -> dim``."""
    return Extra(site, ((dim, rank), (rank, dim)))


def low_rank(geom: ViTGeometry, linear: str, rank: int) -> Extra:
    """A trained ``x A^T B^T`` of rank ``rank`` beside block linear ``linear`` (LoRA)."""
    k, n = geom.linear_shape(linear)
    return Extra(linear, ((k, rank), (rank, n)))


def placed(geom: ViTGeometry, blocks: Iterable[int], cost: BlockCost) -> list[BlockCost]:
    """``cost`` on ``blocks``, the frozen block elsewhere."""
    at = set(blocks)
    return [cost if i in at else FROZEN for i in range(geom.depth)]


class _Counter:
    def __init__(self) -> None:
        self.fwd = self.act = self.wgt = 0

    def linear(self, m: int, k: int, n: int, trained: bool, in_grad: bool) -> bool:
        """``(m, k) @ (k, n)``; returns whether the output needs a gradient."""
        f = 2 * m * k * n
        self.fwd += f
        self.act += f if in_grad else 0
        self.wgt += f if trained else 0
        return in_grad or trained

    def attention(self, n_tok: int, d: int, in_grad: bool) -> bool:
        f = 2 * 2 * n_tok * n_tok * d  # QK^T and AV, all heads together
        self.fwd += f
        self.act += 2 * f if in_grad else 0
        return in_grad

    def extra(self, e: Extra, rows: int, in_grad: bool) -> bool:
        """The chain of ``e`` on an input that needs a gradient or not; whether its output needs one."""
        grad = in_grad or (e.trained and not e.shapes)
        for k, n in e.shapes:
            grad = self.linear(e.rows or rows, k, n, e.trained, grad)
        return grad


def _block(c: _Counter, geom: ViTGeometry, cost: BlockCost, grad: bool) -> bool:
    """Count one block whose input needs a gradient or not (``grad``); whether its output needs one."""
    n_tok = geom.tokens + cost.added_tokens

    def site(name: str, reads: bool, adds_to: bool) -> bool:
        """The extras at ``name`` on an input that needs a gradient or not; whether the sum needs one."""
        outs = [c.extra(e, n_tok, reads) for e in cost.extras if e.site == name]
        return adds_to or any(outs)

    def linear(name: str, reads: bool) -> bool:
        k, n = geom.linear_shape(name)
        return site(name, reads, c.linear(n_tok, k, n, name in cost.trained, reads))

    grad = site("in", grad, grad)
    h = site("attn_in", grad, grad)
    z = c.attention(n_tok, geom.dim, linear("qkv", h))
    a = site("attn", h, linear("proj", z))
    grad = site("attn_out", a, a) or grad  # x1 = x + a (the site first: its extras count in every block)
    g = site("mlp_in", grad, grad)
    m = site("mlp", g, linear("fc2", linear("fc1", g)))
    grad = site("mlp_out", m, m) or grad  # x2 = x1 + m
    return site("out", grad, grad)


def count_step(
    geom: ViTGeometry, blocks: Sequence[BlockCost] | None = None, *, input_grad: bool = False, embed: bool = False
) -> StepFlops:
    """Matmul FLOPs of one training step for one image; the head always trains.

    Args:
        geom: the backbone's geometry.
        blocks: one :class:`BlockCost` per block (None: every block frozen).
        input_grad: a trained tensor sits before block 0 (on the patch-embedding output, the position embedding
            or the input tokens: SSF, VPT-shallow's prompts), so every layer from block 0 on needs input gradients.
        embed: the patch embedding's weight trains (full fine-tuning); implies ``input_grad``.

    Raises:
        ConfigError: ``blocks`` does not have one entry per block.
    """
    blocks = [FROZEN] * geom.depth if blocks is None else list(blocks)
    if len(blocks) != geom.depth:
        raise ConfigError(f"A FLOP count needs one BlockCost per block ({geom.depth}), got {len(blocks)}.")
    c = _Counter()
    c.linear(geom.patches, geom.patch_dim, geom.dim, embed, False)  # the image needs no gradient
    grad = embed or input_grad  # with the patch embedding, the class / position tokens train
    for cost in blocks:
        grad = _block(c, geom, cost, grad)
    if geom.num_classes:
        c.linear(1, geom.dim, geom.num_classes, True, grad)  # one pooled token per image
    return StepFlops(c.fwd, c.act, c.wgt)


def vit_geometry(model: nn.Module) -> ViTGeometry:
    """Read the geometry of a timm ``VisionTransformer`` (attention + MLP blocks, conv patch embedding)."""
    tokens, mlp_hidden = patch_tokens(model), mlp_hidden_width(model)
    if tokens is None or mlp_hidden is None:
        raise ConfigError(
            f"Cannot count FLOPs of {type(model).__name__}: expected a timm VisionTransformer (patch_embed, "
            "blocks with attn.qkv and mlp.fc1/fc2)."
        )
    head, parts = classifier(model), vit_parts(model)
    return ViTGeometry(
        depth=len(backbone_blocks(model)),
        dim=backbone_width(model),
        mlp_hidden=mlp_hidden,
        tokens=tokens.patches + tokens.prefix,
        patches=tokens.patches,
        patch_dim=tokens.patch_dim,
        num_classes=head.out_features if isinstance(head, nn.Linear) else 0,
        qkv_bias=parts.qkv_bias,
        patch_bias=parts.patch_bias,
        layer_scale=parts.layer_scale,
        pos_tokens=parts.pos_tokens,
        norm_pre=parts.norm_pre,
    )


def inference_flops(geom: ViTGeometry) -> StepFlops:
    """Matmul FLOPs of one forward of the plain backbone (and head) for one image."""
    return StepFlops(count_step(geom).forward, 0, 0)  # forward FLOPs do not depend on what trains


def flop_methods() -> list[str]:
    """Names of the registered methods that have a FLOP formula."""
    from . import METHODS  # the registry's Method.step_flops is typed with this module's dataclasses

    # deep enough for every default placement (selective's last:3)
    probe = ViTGeometry(depth=12, dim=4, mlp_hidden=4, tokens=2, patches=1, patch_dim=3, num_classes=2)
    return [m.name for m in METHODS if m.step_flops(probe, m.resolve(None)) is not None]


def step_flops(geom: ViTGeometry, method: str, options: Any = None) -> StepFlops:
    """Matmul FLOPs of one training step of registered ``method`` (with ``options``: None, a mapping or its
    dataclass): the method's own formula, :meth:`~adaptertune.methods.registry.Method.step_flops`.

    Raises:
        ConfigError: the method has no FLOP formula, or an option is bad.
    """
    from . import METHODS

    info = METHODS.get(method)
    flops = info.step_flops(geom, info.resolve(options))
    if flops is None:
        raise ConfigError(f"No FLOP formula for method '{method}'; known: {', '.join(flop_methods())}.")
    return flops
