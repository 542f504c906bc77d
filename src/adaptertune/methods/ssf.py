"""SSF (Lian et al., 2022): scale and shift the features, ``t -> gamma * t + beta`` per channel, at 8 points.

The points of a timm ViT: the patch embedding's output; in every block the outputs of ``norm1``, ``attn.qkv``
(3D channels), ``attn.proj``, ``norm2``, ``mlp.fc1`` (before the activation; 4D channels) and ``mlp.fc2``; and
the final norm's output (``norm``, or ``fc_norm`` on a pooled model). Every point follows a Linear, a LayerNorm
or the patch convolution, so :meth:`SSFMethod.merge` folds gamma into its weight and ``gamma * b + beta`` into
its bias, and the merged model is the plain timm architecture.

The scale-shift modules run by forward hooks on those layers and live in ``block.ssf`` (a :class:`SSFSlot` per
block) and ``model.ssf`` (:class:`SSFEnds`: the embedding and final-norm points), so the backbone's own
``state_dict`` keys never change and several tasks' sets can share one backbone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..config_checks import _as_choice
from ..errors import CheckpointError, ConfigError
from ..vit import backbone_blocks, backbone_width, head_parameter_names
from .flops import LINEARS, BlockCost, Extra, StepFlops, ViTGeometry, count_step
from .registry import Method, register_method
from .slots import DEFAULT_SET, BlockSlot, HookHandles, copy_set_tensors

__all__ = ["SSF_INITS", "SSFEnds", "SSFMethod", "SSFOptions", "SSFSlot", "ScaleShift", "add_ssf", "merge_ssf"]

SSF_INITS = ("normal", "identity")
# the points inside a block: set key -> the module (path under the block) whose output is scaled and shifted
BLOCK_POINTS = {
    "norm1": "norm1",
    "qkv": "attn.qkv",
    "proj": "attn.proj",
    "norm2": "norm2",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
# the FLOP site (methods/flops.py SITES) of each point: elementwise, so it only says where gradients start
_SITES = {"norm1": "attn_in", "qkv": "qkv", "proj": "proj", "norm2": "mlp_in", "fc1": "fc1", "fc2": "fc2"}


@dataclass
class SSFOptions:
    """SSF's options (YAML/CLI ``adapter.*``).

    Args:
        init: ``normal`` (gamma ~ N(1, 0.02), beta ~ N(0, 0.02), as Mai et al.'s SSF: the model does not start
            at the backbone's logits) or ``identity`` (gamma = 1, beta = 0: an exact start).
    """

    init: str = "normal"

    def __post_init__(self) -> None:
        self.init = _as_choice("adapter.init", self.init, SSF_INITS)


class ScaleShift(nn.Module):
    """``t -> gamma * t + beta`` over the last dimension of ``t``."""

    def __init__(self, dim: int, init: str = "normal") -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        if init == "normal":
            nn.init.normal_(self.gamma, mean=1.0, std=0.02)
            nn.init.normal_(self.beta, std=0.02)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.gamma.to(t.dtype) + self.beta.to(t.dtype)


class SSFSlot(BlockSlot):
    """The SSF sets of one block (``block.ssf``): one forward hook per point in :data:`BLOCK_POINTS`; a set is a
    ``ModuleDict`` of :class:`ScaleShift` keyed by point."""

    attr = "ssf"
    kind = "SSF"

    def __init__(self, owner: nn.Module) -> None:
        nn.ModuleDict.__init__(self)
        self.active: str | None = None
        hooks = [m.register_forward_hook(functools.partial(self._point, k)) for k, m in self.points(owner).items()]
        self._handle = HookHandles(hooks)

    @classmethod
    def points(cls, owner: nn.Module) -> dict[str, nn.Module]:
        """Point key -> the module of ``owner`` whose output it scales and shifts."""
        try:
            return {k: owner.get_submodule(path) for k, path in BLOCK_POINTS.items()}
        except AttributeError:
            raise ConfigError(
                f"Block {type(owner).__name__} lacks one of {', '.join(BLOCK_POINTS.values())}; SSF needs a timm "
                "ViT block."
            ) from None

    @classmethod
    def hook_target(cls, block: nn.Module) -> nn.Module:
        cls.points(block)  # raises ConfigError for a block without the points
        return block

    def _point(self, key: str, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output if self.active is None else self[self.active][key](output)


class SSFEnds(SSFSlot):
    """The SSF sets' two points outside the blocks (``model.ssf``): the patch embedding's output and the final
    norm's (``norm``, or ``fc_norm`` on a pooled model)."""

    @classmethod
    def points(cls, owner: nn.Module) -> dict[str, nn.Module]:
        embed, norm = getattr(owner, "patch_embed", None), _final_norm(owner)
        if not isinstance(embed, nn.Module) or norm is None:
            raise ConfigError(
                f"Model {type(owner).__name__} has no `patch_embed` or no final norm (`norm` / `fc_norm`); SSF "
                "needs a timm ViT."
            )
        return {"embed": embed, "norm": norm}

    @classmethod
    def attach_set(cls, model: nn.Module, name: str, module: nn.Module) -> None:
        ends = getattr(model, cls.attr, None)
        if ends is None:
            ends = cls(model)
            setattr(model, cls.attr, ends)
        ends[name] = module

    @classmethod
    def activate_set(cls, model: nn.Module, name: str | None) -> None:
        if isinstance(ends := getattr(model, cls.attr, None), SSFEnds):
            ends.active = name if name in ends else None

    @classmethod
    def detach_set(cls, model: nn.Module, name: str) -> None:
        ends = getattr(model, cls.attr, None)
        if not isinstance(ends, SSFEnds) or name not in ends:
            return
        del ends[name]
        if ends.active == name:
            ends.active = None
        if len(ends) == 0:
            ends._handle.remove()
            delattr(model, cls.attr)


def _final_norm(model: nn.Module) -> nn.Module | None:
    """The last norm before the head: ``norm``, or ``fc_norm`` where ``norm`` is an Identity (pooled models)."""
    for attr in ("norm", "fc_norm"):
        m = getattr(model, attr, None)
        if isinstance(m, nn.Module) and not isinstance(m, nn.Identity):
            return m
    return None


def _set_modules(model: nn.Module, init: str) -> tuple[nn.ModuleDict, dict[int, nn.ModuleDict]]:
    """A fresh SSF set: (the two end points, block index -> the block's six points)."""
    d = backbone_width(model)
    blocks = {}
    for i, b in enumerate(backbone_blocks(model)):
        points = SSFSlot.points(b)  # qkv and fc1 are wider than d
        width = {k: getattr(m, "out_features", d) for k, m in points.items()}
        blocks[i] = nn.ModuleDict({k: ScaleShift(width[k], init) for k in BLOCK_POINTS})
    ends = nn.ModuleDict({"embed": ScaleShift(d, init), "norm": ScaleShift(d, init)})
    return ends, blocks


def _attach(model: nn.Module, name: str, init: str) -> None:
    """Add SSF set ``name`` (inactive) to ``model``."""
    SSFEnds.points(model)  # checked before anything is attached
    ends, blocks = _set_modules(model, init)
    SSFSlot.attach(model, name, blocks)
    SSFEnds.attach_set(model, name, ends)


def _activate(model: nn.Module, name: str | None) -> None:
    SSFSlot.activate(model, name)
    SSFEnds.activate_set(model, name)


def _detach(model: nn.Module, name: str) -> None:
    SSFSlot.detach(model, name)
    SSFEnds.detach_set(model, name)


def add_ssf(model: nn.Module, options: SSFOptions | None = None, name: str = DEFAULT_SET) -> nn.Module:
    """Attach SSF set ``name`` in place and make it active; only its tensors and the head train."""
    options = options or SSFOptions()
    _attach(model, name, options.init)
    _activate(model, name)
    head = set(head_parameter_names(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head or f"ssf.{name}." in n)
    return model


@torch.no_grad()
def _fold(target: nn.Module, ss: ScaleShift, where: str) -> None:
    """Make ``target``'s output ``gamma * out + beta``: scale its weight's output channels and its bias."""
    weight, bias = getattr(target, "weight", None), getattr(target, "bias", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise ConfigError(f"SSF cannot fold into '{where}' ({type(target).__name__}): it has no weight and bias.")
    gamma, beta = ss.gamma.to(weight.dtype), ss.beta.to(weight.dtype)
    weight.mul_(gamma.view(-1, *[1] * (weight.ndim - 1)))  # Linear (out, in), conv (out, c, k, k), norm (D,)
    bias.mul_(gamma).add_(beta)


def _embed_target(model: nn.Module) -> tuple[nn.Module, str]:
    """The last affine layer of the patch embedding: its norm when it has one, else its projection."""
    pe = model.patch_embed
    norm = getattr(pe, "norm", None)
    if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
        return norm, "patch_embed.norm"
    return pe.proj, "patch_embed.proj"


@torch.no_grad()
def merge_ssf(model: nn.Module) -> bool:
    """Fold the active SSF set into the layers before its points and remove every SSF module and hook (in place).

    Returns False when the model holds no SSF set.

    Raises:
        ConfigError: more than one set, or none active; a point's layer has no bias to take the shift.
    """
    names = SSFSlot.set_names(model)
    if not names:
        return False
    active = SSFSlot.active_set(model)
    if len(names) != 1 or active is None:
        raise ConfigError(f"SSF merges one active set; this model has {', '.join(names)} (active: {active}).")
    ends = model.ssf[active]
    target, where = _embed_target(model)
    _fold(target, ends["embed"], where)
    _fold(_final_norm(model), ends["norm"], "the final norm")
    for i, slot in SSFSlot.slots(model).items():
        block = backbone_blocks(model)[i]
        for key, path in BLOCK_POINTS.items():
            _fold(block.get_submodule(path), slot[active][key], f"blocks.{i}.{path}")
    _detach(model, active)
    return True


class SSFMethod(Method):
    """SSF: a scale and shift per channel at 8 points (:data:`BLOCK_POINTS` in every block, the patch embedding
    and the final norm). Default size on ViT-B/16: 22 D per block + 4 D = 205,824 parameters (METHODS.md).

    Defaults are S's recipe (lr 5e-3, wd 5e-5); as in S's timm optimizer, the engine applies no weight decay to
    1-D tensors, so the decay reaches the head's weight only.
    """

    name = "ssf"
    description = "SSF: frozen backbone + per-channel scale and shift after 8 layers per block/ends + head"
    options = SSFOptions
    defaults = {"lr": 5e-3, "weight_decay": 5e-5}
    lr_grid = (1e-3, 5e-3, 1e-2)  # around S's 5e-3; M searches 1e-3 and 1e-2
    shares_backbone = True
    plain_after_merge = True

    def build(self, model: nn.Module, options: SSFOptions) -> nn.Module:
        return add_ssf(model, options)

    def attach(
        self, backbone: nn.Module, task: str, options: SSFOptions, tensors: dict[str, torch.Tensor], source: str
    ) -> None:
        _attach(backbone, task, "identity")
        own = {k: p for k, p in backbone.named_parameters() if f"ssf.{task}." in k}
        try:
            copy_set_tensors(own, tensors, f"ssf.{DEFAULT_SET}.", f"ssf.{task}.", "SSF")
        except CheckpointError as e:
            _detach(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None
        for p in own.values():
            p.requires_grad_(False)

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        _activate(backbone, task)

    def detach(self, backbone: nn.Module, task: str) -> None:
        _detach(backbone, task)

    def merge(self, model: nn.Module) -> bool:
        return merge_ssf(model)

    def step_flops(self, geom: ViTGeometry, options: SSFOptions) -> StepFlops:
        # no matmul of its own; the scale-shift on the patch embedding's output trains: gradients from block 0 on
        cost = BlockCost(extras=tuple(Extra(_SITES[k]) for k in BLOCK_POINTS))
        return count_step(geom, [cost] * geom.depth, input_grad=True)

    def trainable_params(self, geom: ViTGeometry, options: SSFOptions, num_classes: int) -> int:
        # the width of each point: a linear's outputs (qkv 3d, fc1 the MLP's hidden width), a norm's d
        per_block = sum(geom.linear_shape(s)[1] if s in LINEARS else geom.dim for s in _SITES.values())
        return 2 * (geom.depth * per_block + 2 * geom.dim) + geom.head_params(num_classes)  # gamma, beta; 2 ends

    def frozen_prefix(self, model: nn.Module, options: SSFOptions) -> int:
        return 0  # the patch embedding's output is scaled and shifted


register_method(SSFMethod())
