"""Named module sets on the blocks of a backbone, run by forward hooks: the base of every method that adds its own
modules per task (AdapterTune's serial adapters, AdaptFormer's parallel adapters, a plugin's scale-shift).

A placed block gets one child ``block.<attr>``, a :class:`BlockSlot` (a ``ModuleDict`` of named sets, one
module per set), and forward hooks on the block or on children of it (:meth:`BlockSlot.hook_targets`, and
:meth:`BlockSlot.pre_hook_targets` for a slot that also acts on a module's input) that run the active set. The
backbone's own ``state_dict`` keys never change (a set's tensors appear under ``blocks.{i}.{attr}.{name}.``), and
timm's ``forward_features`` / ``reset_classifier`` / grad checkpointing keep working because no block is replaced.
The slot keeps its hooks' handles as one (:class:`HookHandles`): removing the last set of a block removes every
hook and the child, and the block is the plain block again. A set joins on its block's device and in its block's
train / eval mode (a set attached to a backbone in eval runs no dropout).

A subclass sets ``attr`` and ``kind`` and says what the active set does (:meth:`BlockSlot.run`); the backbone-level
operations are class methods of the subclass:

    >>> class ScaleSlot(BlockSlot):
    ...     attr, kind = "scales", "scale"
    ...     def run(self, module, args, output):
    ...         return module(output)
    >>> class PairSlot(BlockSlot):   # several hooks: a set is a ModuleDict keyed like the targets
    ...     attr, kind = "pairs", "pair"
    ...     @classmethod
    ...     def hook_targets(cls, block):
    ...         return {"attn": block.attn, "mlp": block.mlp}
    ...     def run_at(self, name, target, args, output):
    ...         return self[self.active][name](output)
    >>> ScaleSlot.attach(model, "pets", {i: Scale(d) for i in (10, 11)})   # slots and hooks made on first use
    >>> ScaleSlot.activate(model, "pets")          # None: every set off, the plain backbone
    >>> ScaleSlot.detach(model, "pets")            # blocks left empty lose their slot and hook
    >>> ScaleSlot.remove(model)                    # every set
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import CheckpointError, ConfigError
from ..vit import backbone_blocks

__all__ = ["DEFAULT_SET", "BlockSlot", "HookHandles", "copy_set_tensors"]

DEFAULT_SET = "default"  # the set a single-task build makes (its tensors' names, and the adapter file's, carry it)


def copy_set_tensors(
    target: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], theirs: str, own: str, what: str
) -> None:
    """Copy an adapter file's ``tensors`` (named with set marker ``theirs``, e.g. ``.adapters.default.``) into a
    rebuilt set's ``target`` parameters (named with ``own``), in place.

    Raises:
        CheckpointError: the renamed names or the shapes differ from ``target``'s (``what`` names the tensors).
    """
    renamed = {k.replace(theirs, own, 1): v for k, v in tensors.items()}
    if set(renamed) != set(target):
        extra, missing = sorted(set(renamed) - set(target)), sorted(set(target) - set(renamed))
        raise CheckpointError(
            f"its {what} tensors do not match the rebuilt set: unexpected {extra[:3]}, missing {missing[:3]}."
        )
    if bad := [k for k, p in target.items() if renamed[k].shape != p.shape]:
        k = bad[0]
        raise CheckpointError(
            f"'{k}' is {tuple(renamed[k].shape)} in the file, {tuple(target[k].shape)} in the rebuilt set."
        )
    with torch.no_grad():
        for k, p in target.items():
            p.copy_(renamed[k])


class HookHandles:
    """Several hook handles removed as one (what a slot keeps as ``_handle``)."""

    def __init__(self, handles: list[RemovableHandle]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class BlockSlot(nn.ModuleDict):
    """The named sets of one block; forward hooks on :meth:`hook_targets` (and forward pre-hooks on
    :meth:`pre_hook_targets`) apply the active one.

    Attributes:
        attr: the block attribute that holds the slot (part of the sets' parameter names).
        kind: what a set is, for messages (``serial adapter``).
        active: the name of the set the hooks run (None: the hooked modules run unchanged).
    """

    attr: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.active: str | None = None
        pre = [
            m.register_forward_pre_hook(functools.partial(self._pre, k))
            for k, m in self.pre_hook_targets(block).items()
        ]
        post = [m.register_forward_hook(functools.partial(self._post, k)) for k, m in self.hook_targets(block).items()]
        self._handle = HookHandles(pre + post)

    # ------------------------------------------------------------ what a subclass says
    @classmethod
    def hook_target(cls, block: nn.Module) -> nn.Module:
        """The module whose output the active set changes (default: the block); raise ConfigError if it has none.
        A slot with one hook says this; one with several says :meth:`hook_targets`."""
        return block

    @classmethod
    def hook_targets(cls, block: nn.Module) -> dict[str, nn.Module]:
        """Hook name -> a module of ``block`` whose output the active set changes (:meth:`run_at`); raise
        ConfigError if the block lacks one. Default: ``{"": hook_target(block)}``."""
        return {"": cls.hook_target(block)}

    @classmethod
    def pre_hook_targets(cls, block: nn.Module) -> dict[str, nn.Module]:
        """Hook name -> a module of ``block`` whose input the active set sees first (:meth:`enter`; default: none)."""
        return {}

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """The hooked module's ``output`` (its inputs ``args``) changed by the active set's ``module``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run().")

    def run_at(self, name: str, target: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Hook ``name`` on ``target`` (inputs ``args``): its ``output`` changed by the active set (default:
        :meth:`run` with the active set's module)."""
        return self.run(self[self.active], args, output)

    def enter(self, name: str, target: nn.Module, args: tuple) -> tuple | None:
        """Pre-hook ``name`` on ``target``: its inputs ``args`` replaced (a tuple) or kept (None)."""
        raise NotImplementedError(f"{type(self).__name__} has pre-hook targets but does not implement enter().")

    def _pre(self, name: str, target: nn.Module, args: tuple) -> tuple | None:
        return None if self.active is None else self.enter(name, target, args)

    def _post(self, name: str, target: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output if self.active is None else self.run_at(name, target, args, output)

    # ------------------------------------------------------------ the backbone's slots
    @classmethod
    def slots(cls, model: nn.Module) -> dict[int, BlockSlot]:
        """Block index -> the block's slot under ``attr`` (of whatever kind: kinds sharing ``attr`` exclude each
        other on one backbone)."""
        return {
            i: slot
            for i, b in enumerate(backbone_blocks(model))
            if isinstance(slot := getattr(b, cls.attr, None), BlockSlot)
        }

    @classmethod
    def set_names(cls, model: nn.Module) -> list[str]:
        """Names of the sets on ``model``, sorted."""
        return sorted({n for s in cls.slots(model).values() for n in s})

    @classmethod
    def blocks_of(cls, model: nn.Module, name: str | None) -> list[int]:
        """Indices of the blocks that hold set ``name``."""
        return [i for i, s in cls.slots(model).items() if name in s]

    @classmethod
    def active_set(cls, model: nn.Module) -> str | None:
        """The set the backbone runs (None: none, or the slots disagree)."""
        actives = {s.active for s in cls.slots(model).values()} - {None}
        return actives.pop() if len(actives) == 1 else None

    # ------------------------------------------------------------ attach / activate / detach / remove
    @classmethod
    def attach(cls, model: nn.Module, name: str, modules: Mapping[int, nn.Module]) -> None:
        """Put ``modules[i]`` into block ``i``'s slot as set ``name`` (inactive; see :meth:`activate`), on the
        block's device and in its train / eval mode.

        Raises:
            ConfigError: ``name`` is taken or not a usable key; a block holds a slot of another kind under
                ``attr``; a block lacks one of the slot's hook targets. Nothing is changed then.
        """
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"A {cls.kind} set name must be a non-empty string without dots, got {name!r}.")
        if name in cls.set_names(model):
            raise ConfigError(
                f"A set named '{name}' already exists in `block.{cls.attr}`; remove it first or pick another name."
            )
        if hasattr(cls, name) or name in ("active", "_handle", *vars(nn.Module())):
            raise ConfigError(f"'{name}' cannot name a {cls.kind} set: it is an attribute of the slot; pick another.")
        if other := {s.kind for s in cls.slots(model).values() if type(s) is not cls}:
            raise ConfigError(
                f"The backbone already holds {', '.join(sorted(other))} sets in `block.{cls.attr}`; {cls.kind} sets "
                "cannot share a backbone with them."
            )
        blocks = backbone_blocks(model)
        for i in modules:
            if not isinstance(getattr(blocks[i], cls.attr, None), BlockSlot | None):
                raise ConfigError(f"Block {i} already has an attribute `{cls.attr}` that is not a {cls.kind} slot.")
            cls.hook_targets(blocks[i]), cls.pre_hook_targets(blocks[i])
        for i, module in modules.items():
            block = blocks[i]
            slot = getattr(block, cls.attr, None)
            if slot is None:
                slot = cls(block)
                setattr(block, cls.attr, slot)
            if (p := next(block.parameters(), None)) is not None:
                module = module.to(p.device)
            slot[name] = module.train(block.training)

    @classmethod
    def activate(cls, model: nn.Module, name: str | None) -> None:
        """Run set ``name`` on every block that holds it, no set elsewhere (``None``: no set anywhere)."""
        slots = cls.slots(model)
        if name is not None and not any(name in s for s in slots.values()):
            raise ConfigError(
                f"No set named '{name}' in `block.{cls.attr}`; this model has: "
                f"{', '.join(cls.set_names(model)) or 'none'}."
            )
        for slot in slots.values():
            slot.active = name if name in slot else None

    @classmethod
    def detach(cls, model: nn.Module, name: str) -> None:
        """Delete set ``name``; a block left with no set loses its slot and the slot's hook."""
        if name not in cls.set_names(model):
            raise ConfigError(
                f"No set named '{name}' in `block.{cls.attr}`; this model has: "
                f"{', '.join(cls.set_names(model)) or 'none'}."
            )
        for i, slot in cls.slots(model).items():
            if name not in slot:
                continue
            del slot[name]
            if slot.active == name:
                slot.active = None
            if len(slot) == 0:
                slot._handle.remove()
                delattr(backbone_blocks(model)[i], cls.attr)

    @classmethod
    def remove(cls, model: nn.Module) -> None:
        """Delete every set: no slot and no hook of ``attr`` is left."""
        for name in cls.set_names(model):
            cls.detach(model, name)

    def extra_repr(self) -> str:
        return f"active={self.active!r}"
