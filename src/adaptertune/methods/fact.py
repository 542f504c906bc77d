"""FacT (Jie & Deng, AAAI 2023; JieShibo/PETL-ViT FacT/): the weight updates of every block's qkv, proj, fc1 and fc2,
factorised through one pair of projections shared by all blocks.

``U: D -> d`` and ``V: d -> D`` (no biases) are shared; per block and linear a small core ``C`` maps between them::

    qkv  out += s [V C_q U h; V C_k U h; V C_v U h]        h: qkv's input
    proj out += s V C_o U z                                z: proj's input (the attention output)
    fc1  out += s [V C_fc1,m U g]_m        (k = hidden / D output chunks of width D)
    fc2  out += s V sum_m C_fc2,m U x_m    (x_m: the k input chunks of fc2 of width D)

with dropout on the cores' d-dim outputs (before V) during training. ``V = 0``, so the model starts bitwise at
the backbone. Two ways to make the cores (``4 + 2k`` d x d matrices per block, 12 for ViTs' MLP ratio 4):

* ``fact-tt`` (tensor-train): each core its own matrix, default ``nn.Linear`` init.
  P = 2 D d + L (4 + 2k) d^2 (ViT-B/16, d = 8: 1536 d + 144 d^2 = 21,504).
* ``fact-tk`` (Tucker): ``C_j = sum_i Core[:, :, i] Pm[i, j]``, ``Core`` in R^{d x d x d}, ``Pm`` in
  R^{d x (4 + 2k) L}, both Xavier. P = 2 D d + (4 + 2k) L d + d^3 (ViT-B/16, d = 16: 30,976).

U is ``nn.Linear``'s default init. Every update is linear in the layer's input, so it merges into the weights
(``W += s V C U`` per output / input chunk) and the model becomes the plain timm architecture.

A task's tensors (U, V and its cores together) are one module in ``model.fact`` (a ``ModuleDict`` of named sets;
the backbone's own keys are unchanged); one forward hook per adapted linear runs the active set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config_checks import _as_float, _as_int, _as_probability
from ..errors import CheckpointError, ConfigError
from ..vit import backbone_blocks, backbone_width, head_parameter_names, mlp_hidden_width
from .flops import BlockCost, Extra, StepFlops, ViTGeometry, count_step
from .registry import Method, register_method
from .slots import DEFAULT_SET, copy_set_tensors

__all__ = [
    "FactSets",
    "FactTK",
    "FactTKMethod",
    "FactTKOptions",
    "FactTT",
    "FactTTMethod",
    "FactTTOptions",
    "fact_param_count",
    "merge_fact",
    "tk_core_flops",
]

SITES = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}  # site -> linear in a block


def _chunks(site: str, k: int) -> tuple[int, int]:
    """(output chunks, input chunks) of width D of a site's linear; k = MLP hidden / D."""
    return {"qkv": (3, 1), "proj": (1, 1), "fc1": (k, 1), "fc2": (1, k)}[site]


@dataclass
class FactTTOptions:
    """FacT's options (YAML/CLI ``fact-tt.*`` / ``fact-tk.*``, or the legacy ``adapter.*``).

    Args:
        rank: d, the width of the shared factors U (D -> d) and V (d -> D) and of the cores.
        scale: s, the factor of every update (J tunes it per dataset; 1 here).
        dropout: dropout on the cores' d-dim outputs during training.
    """

    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1
    section: ClassVar[str] = "fact-tt"  # the method's config section, for messages

    def __post_init__(self) -> None:
        self.rank = _as_int(f"{self.section}.rank", self.rank, minimum=1)
        self.scale = _as_float(f"{self.section}.scale", self.scale)
        self.dropout = _as_probability(f"{self.section}.dropout", self.dropout)


@dataclass
class FactTKOptions(FactTTOptions):
    __doc__ = FactTTOptions.__doc__
    section: ClassVar[str] = "fact-tk"
    rank: int = 16


class _FactBase(nn.Module):
    """U, V and the cores of one task; :meth:`weight` is a site's core in ``nn.Linear`` layout (out, in)."""

    def __init__(self, dim: int, depth: int, k: int, rank: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.dim, self.depth, self.k, self.rank, self.scale = dim, depth, k, rank, scale
        self.U = nn.Linear(dim, rank, bias=False)
        self.V = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.V.weight)  # every update is exactly 0 at step 0
        self.drop = nn.Dropout(dropout)

    def weight(self, block: int, site: str) -> torch.Tensor:
        """The core of ``site`` in block ``block``: (out chunks * d, in chunks * d)."""
        raise NotImplementedError

    def delta(self, block: int, site: str, x: torch.Tensor) -> torch.Tensor:
        """The update of ``site``'s output for its input ``x`` (..., in chunks * D) -> (..., out chunks * D)."""
        w = self.weight(block, site)
        n_out, n_in = _chunks(site, self.k)
        u = self.U(x.unflatten(-1, (n_in, self.dim))).flatten(-2)  # (..., n_in * d)
        c = self.drop(F.linear(u, w.to(u.dtype)))  # (..., n_out * d)
        return self.scale * self.V(c.unflatten(-1, (n_out, self.rank))).flatten(-2)  # (..., n_out * D)

    @torch.no_grad()
    def delta_weight(self, block: int, site: str) -> torch.Tensor:
        """``s V C U`` per (output, input) chunk: the site's weight update (n_out D, n_in D), float64."""
        n_out, n_in = _chunks(site, self.k)
        w = self.weight(block, site).double().view(n_out, self.rank, n_in, self.rank)
        dw = torch.einsum("Da,oaib,bE->oDiE", self.V.weight.double(), w, self.U.weight.double())
        return self.scale * dw.reshape(n_out * self.dim, n_in * self.dim)


class _TTBlock(nn.Module):
    """One block's cores: qkv (3d, d), proj (d, d), fc1 (kd, d), fc2 (d, kd), each ``nn.Linear``'s default init."""

    def __init__(self, rank: int, k: int) -> None:
        super().__init__()
        for site in SITES:
            n_out, n_in = _chunks(site, k)
            w = nn.Parameter(torch.empty(n_out * rank, n_in * rank))
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Linear(n_in d, n_out d)'s init
            setattr(self, site, w)


class FactTT(_FactBase):
    """FacT-TT: per-block cores (:class:`_TTBlock`)."""

    def __init__(self, dim: int, depth: int, k: int, rank: int, scale: float, dropout: float) -> None:
        super().__init__(dim, depth, k, rank, scale, dropout)
        self.blocks = nn.ModuleList(_TTBlock(rank, k) for _ in range(depth))

    def weight(self, block: int, site: str) -> torch.Tensor:
        return getattr(self.blocks[block], site)


class FactTK(_FactBase):
    """FacT-TK: ``C_j = sum_i Core[:, :, i] Pm[i, j]`` with ``4 + 2k`` columns of ``Pm`` per block (q, k, v, o,
    fc1 chunks, fc2 chunks); a core maps ``u -> u @ C_j``."""

    def __init__(self, dim: int, depth: int, k: int, rank: int, scale: float, dropout: float) -> None:
        super().__init__(dim, depth, k, rank, scale, dropout)
        self.core = nn.Parameter(torch.empty(rank, rank, rank))
        self.factors = nn.Parameter(torch.empty(rank, (4 + 2 * k) * depth))
        nn.init.xavier_uniform_(self.core)
        nn.init.xavier_uniform_(self.factors)

    def weight(self, block: int, site: str) -> torch.Tensor:
        n = 4 + 2 * self.k
        first = {"qkv": 0, "proj": 3, "fc1": 4, "fc2": 4 + self.k}[site]
        n_out, n_in = _chunks(site, self.k)
        cols = self.factors[:, block * n + first : block * n + first + max(n_out, n_in)]
        c = torch.einsum("abi,ij->jba", self.core, cols)  # C_j^T: (j, out d, in d), nn.Linear layout
        return torch.cat(list(c), dim=0 if n_out > 1 else 1)  # chunks stacked along outputs or inputs


class FactSets(nn.ModuleDict):
    """The FacT sets of a backbone (``model.fact``); one forward hook per block linear adds the active set's update.

    Attributes:
        active: the set the hooks run (None: every linear runs plain).
    """

    attr = "fact"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.active: str | None = None
        self._handles = [
            blk.get_submodule(path).register_forward_hook(partial(self._hook, i, site))
            for i, blk in enumerate(backbone_blocks(model))
            for site, path in SITES.items()
        ]

    def _hook(self, block: int, site: str, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            return output
        return output + self[self.active].delta(block, site, args[0]).to(output.dtype)

    @classmethod
    def of(cls, model: nn.Module) -> FactSets | None:
        sets = getattr(model, cls.attr, None)
        return sets if isinstance(sets, FactSets) else None

    @classmethod
    def attach(cls, model: nn.Module, name: str, module: _FactBase) -> None:
        """Add set ``name`` (inactive); the first set makes the container and its hooks."""
        sets = cls.of(model)
        if sets is None:
            if hasattr(model, cls.attr):
                raise ConfigError(f"The model already has an attribute `{cls.attr}` that is not a FacT container.")
            sets = cls(model)
            setattr(model, cls.attr, sets)
        if not isinstance(name, str) or not name or "." in name or name in sets or hasattr(sets, name):
            raise ConfigError(f"A FacT set name must be a new non-empty string without dots, got {name!r}.")
        sets[name] = module

    @classmethod
    def activate(cls, model: nn.Module, name: str | None) -> None:
        sets = cls.of(model)
        if name is not None and (sets is None or name not in sets):
            have = ", ".join(sets) if sets is not None else ""
            raise ConfigError(f"No FacT set named '{name}'; this model has: {have or 'none'}.")
        if sets is not None:
            sets.active = name

    @classmethod
    def detach(cls, model: nn.Module, name: str) -> None:
        """Delete set ``name``; with the last set the hooks and ``model.fact`` go."""
        sets = cls.of(model)
        if sets is None or name not in sets:
            raise ConfigError(f"No FacT set named '{name}'.")
        del sets[name]
        if sets.active == name:
            sets.active = None
        if len(sets) == 0:
            for h in sets._handles:
                h.remove()
            delattr(model, cls.attr)


def _hidden_chunks(model: nn.Module) -> int:
    d, hidden = backbone_width(model), mlp_hidden_width(model)
    blocks = backbone_blocks(model)
    for i, blk in enumerate(blocks):
        for path in SITES.values():
            try:
                ok = isinstance(blk.get_submodule(path), nn.Linear)
            except AttributeError:
                ok = False
            if not ok:
                raise ConfigError(f"Block {i} has no `{path}` Linear; FacT needs timm ViT blocks.")
    if hidden is None or hidden % d:
        raise ConfigError(f"FacT needs an MLP hidden width that is a multiple of the width {d}, got {hidden}.")
    return hidden // d


def add_fact(model: nn.Module, kind: type[_FactBase], options: FactTTOptions, name: str = DEFAULT_SET) -> nn.Module:
    """Attach FacT set ``name`` of ``kind`` to every block; make it active and trainable (with the head)."""
    d, blocks = backbone_width(model), backbone_blocks(model)
    k = _hidden_chunks(model)
    if options.rank > d:
        raise ConfigError(f"`adapter.rank` {options.rank} is larger than the backbone width {d}; use 1..{d}.")
    module = kind(d, len(blocks), k, options.rank, options.scale, options.dropout)
    FactSets.attach(model, name, module.to(next(blocks[0].parameters()).device).train(blocks[0].training))
    FactSets.activate(model, name)
    head = set(head_parameter_names(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head or n.startswith(f"{FactSets.attr}.{name}."))
    return model


@torch.no_grad()
def merge_fact(model: nn.Module) -> bool:
    """Fold the active FacT set into the blocks' qkv / proj / fc1 / fc2 weights and remove every set (in place)."""
    sets = FactSets.of(model)
    if sets is None:
        return False
    if sets.active is not None:
        module = sets[sets.active]
        for i, blk in enumerate(backbone_blocks(model)):
            for site, path in SITES.items():
                w = blk.get_submodule(path).weight
                w.copy_((w.double() + module.delta_weight(i, site)).to(w.dtype))
    for name in list(sets):
        FactSets.detach(model, name)
    return True


def fact_param_count(kind: str, depth: int, width: int, rank: int, k: int = 4) -> int:
    """FacT parameters (k = MLP hidden / width): tt ``2 D d + (4 + 2k) L d^2``, tk ``2 D d + (4 + 2k) L d + d^3``."""
    n = (4 + 2 * k) * depth
    return 2 * width * rank + (n * rank * rank if kind == "tt" else n * rank + rank**3)


def _geometry_chunks(geom: ViTGeometry) -> int:
    """k = MLP hidden / width of ``geom`` (FacT splits fc1's outputs and fc2's inputs into k chunks of width D)."""
    if geom.mlp_hidden % geom.dim:
        raise ConfigError(
            f"FacT needs an MLP hidden width that is a multiple of the width {geom.dim}, got {geom.mlp_hidden}."
        )
    return geom.mlp_hidden // geom.dim


def tk_core_flops(geom: ViTGeometry, options: FactTKOptions) -> int:
    """Matmul FLOPs FacT-TK spends once per training step, whatever the batch: each of the ``(4 + 2k) L`` cores
    ``C_j = Core x_3 Pm[:, j]`` is a ``(d^2, d) @ (d, 1)`` product in the forward, and the backward gives both
    ``Core`` and ``Pm`` their gradient: ``2 d^3`` FLOPs each, ``6 d^3 (4 + 2k) L`` per step (3.5 MFLOPs on
    ViT-B/16 at d = 16)."""
    return 3 * 2 * options.rank**3 * (4 + 2 * _geometry_chunks(geom)) * geom.depth


class _FactMethod(Method):
    kind: ClassVar[type[_FactBase]] = FactTT
    factors: ClassVar[str] = "tt"  # fact_param_count's kind
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}  # Mai et al.'s grid: lr {1e-3, 1e-2} x wd {1e-4, 1e-3}
    lr_grid = (1e-3, 1e-2)
    shares_backbone = True
    plain_after_merge = True

    def build(self, model: nn.Module, options: FactTTOptions) -> nn.Module:
        return add_fact(model, self.kind, options)

    def attach(
        self, backbone: nn.Module, task: str, options: FactTTOptions, tensors: dict[str, torch.Tensor], source: str
    ) -> None:
        try:
            add_fact(backbone, self.kind, options, task)
        except ConfigError as e:
            raise ConfigError(f"Task '{task}' ({source}): {e}") from None
        prefix, own_prefix = f"{FactSets.attr}.{DEFAULT_SET}.", f"{FactSets.attr}.{task}."
        own = {k: p for k, p in backbone.named_parameters() if k.startswith(own_prefix)}
        try:  # a file key without the prefix keeps its name and is refused as unexpected
            copy_set_tensors(own, tensors, prefix, own_prefix, self.name)
        except CheckpointError as e:
            self.detach(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        FactSets.activate(backbone, task)

    def detach(self, backbone: nn.Module, task: str) -> None:
        FactSets.detach(backbone, task)

    def merge(self, model: nn.Module) -> bool:
        return merge_fact(model)

    def step_flops(self, geom: ViTGeometry, options: FactTTOptions) -> StepFlops:
        """Per block, beside each of qkv / proj / fc1 / fc2: U on each of its ``n_in`` input chunks (``D -> d``), the
        core (``n_in d -> n_out d``) and V on each of its ``n_out`` output chunks (``d -> D``); U and V are shared,
        but each use costs its own matmuls and weight gradient. (FacT-TK adds its cores' build once per step.)"""
        d, r, k = geom.dim, options.rank, _geometry_chunks(geom)
        extras = []
        for site in SITES:
            n_out, n_in = _chunks(site, k)
            extras.append(Extra(site, ((n_in * d, r), (n_in * r, n_out * r), (r, n_out * d))))
        return count_step(geom, [BlockCost(extras=tuple(extras))] * geom.depth)

    def trainable_params(self, geom: ViTGeometry, options: FactTTOptions, num_classes: int) -> int:
        params = fact_param_count(self.factors, geom.depth, geom.dim, options.rank, _geometry_chunks(geom))
        return params + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: FactTTOptions) -> int:
        return 0  # every block's linears are adapted


class FactTTMethod(_FactMethod):
    """FacT-TT on every block; default size d = 8, s = 1, dropout 0.1: P = 21,504 on ViT-B/16."""

    name = "fact-tt"
    description = "FacT-TT: shared U, V (zero) and per-block cores on qkv/proj/fc1/fc2, mergeable (d=8) + head"
    options = FactTTOptions
    kind = FactTT


class FactTKMethod(_FactMethod):
    """FacT-TK on every block; default size d = 16, s = 1, dropout 0.1: P = 30,976 on ViT-B/16."""

    name = "fact-tk"
    description = "FacT-TK: shared U, V (zero) and a Tucker core over all blocks' updates, mergeable (d=16) + head"
    options = FactTKOptions
    kind = FactTK
    factors = "tk"

    def step_flops(self, geom: ViTGeometry, options: FactTKOptions) -> StepFlops:
        """FacT-TT's matmuls per image, plus the cores built from ``Core`` and ``Pm`` once per step
        (:func:`tk_core_flops`) as ``per_step``. ``StepFlops.per_step`` is one number that ``scaled`` adds to the
        forward, so the two thirds of it spent in the backward (the gradients of ``Core`` and ``Pm``) count as
        forward FLOPs there; the step's total is exact."""
        return replace(super().step_flops(geom, options), per_step=tk_core_flops(geom, options))


register_method(FactTTMethod())
register_method(FactTKMethod())
