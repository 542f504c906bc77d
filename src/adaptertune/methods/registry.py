"""A transfer method is one registered unit: a :class:`Method` subclass instance in :data:`METHODS`.

Everything that differs between methods hangs off the entry, in the shape of PEFT's
``register_peft_method(name, config_cls, model_cls)`` and ``BaseTuner``: the options dataclass, ``build``,
how a multi-task model attaches / switches / removes a task (``attach``, ``activate``, ``detach``), the
merge before export, the FLOP formula and the inputs ``fit`` trains on (``prepare_fit``). Adding a method
is one file that subclasses :class:`Method` and calls :func:`register_method`.

Example:
    >>> class Frozen(Method):
    ...     name, description = "frozen", "nothing trains"
    ...     def build(self, model, options):
    ...         return model.requires_grad_(False)
    >>> register_method(Frozen())
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..config import LEGACY_OPTIONS, RUN_KEYS
from ..errors import CheckpointError, ConfigError
from ..registry import Registry
from ..vit import backbone_blocks, embedding_parts, head_parameter_names
from .fit import FitContext, FitInputs
from .slots import DEFAULT_SET, BlockSlot, copy_set_tensors

if TYPE_CHECKING:
    from .flops import StepFlops, ViTGeometry

__all__ = [
    "METHODS",
    "Method",
    "build_method",
    "option_defaults",
    "register_method",
    "resolve_adapter_config",
    "resolve_options",
    "unregister_method",
]


class Method:
    """Base class of a transfer method; subclass it, set the class attributes, register an instance.

    Attributes:
        name: registry name (``--method``).
        description: one line.
        options: the options dataclass, its fields the method's own config section (YAML ``lora: {rank: 8}``,
            CLI ``--set lora.rank=8``; ``adapter.*`` is the selected method's, whatever it is); each method's
            defaults are its own. None: the method takes no options.
        defaults: the method's own hyper-parameter defaults (``lr``, ``weight_decay``).
        lr_grid: the learning rates a sweep's ``tune: {train.lr: default}`` searches for this method (on
            validation, :mod:`adaptertune.sweeps.tuning_spec`).
        shares_backbone: its trained tensors (besides the head) can sit next to other tasks' on one frozen
            backbone (:class:`adaptertune.multitask.MultiTaskModel`); then ``attach``/``activate``/``detach``
            say how (by default through ``slot``).
        slot: the :class:`~adaptertune.methods.slots.BlockSlot` its per-block modules live in (None: it has
            none). A method with a slot writes :meth:`slot_modules` and gets ``build`` and the multi-task
            ``attach`` / ``activate`` / ``detach`` from the defaults.
        cached_features: the method never sees augmented images (``data.augment`` is forced off).
        plain_after_merge: after :meth:`merge` the model is the backbone's own timm architecture (its
            ``state_dict`` loads into ``timm.create_model``), so it exports as a timm folder.
        peft_format: :meth:`save_peft` writes the trained tensors as a Hugging Face PEFT adapter folder.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[type | None] = None
    defaults: ClassVar[Mapping[str, Any]] = {"lr": 1e-3, "weight_decay": 0.05}
    lr_grid: ClassVar[tuple[float, ...]] = (3e-4, 1e-3, 3e-3)  # adapters, LoRA, BitFit: around the paper's 1e-3
    shares_backbone: ClassVar[bool] = False
    cached_features: ClassVar[bool] = False
    plain_after_merge: ClassVar[bool] = False
    peft_format: ClassVar[bool] = False

    # ------------------------------------------------------------ options and build
    def option_names(self) -> tuple[str, ...]:
        """The option keys the method accepts (``adapter.<key>``), in declaration order."""
        return tuple(f.name for f in dataclasses.fields(self.options)) if self.options else ()

    def resolve(self, given: Any) -> Any:
        """The method's options object for ``given`` (None, a mapping, or an options dataclass), as the legacy
        ``adapter:`` section or an adapter file's metadata gives them.

        A key the method does not accept is an error unless it has the value some method gives it by default
        (so a shared legacy sweep base or an unset CLI default does not trip it).

        Raises:
            ConfigError: an option the method does not take; a bad value (from the options class).
        """
        if self.options is None:
            if given is not None:
                names = ", ".join(_set_keys(given)) or "an empty `adapter` section"
                takers = ", ".join(m.name for m in METHODS if m.options)
                raise ConfigError(
                    f"Method '{self.name}' takes no adapter options (got {names}); remove them or use a method "
                    f"that does: {takers}."
                )
            return None
        if isinstance(given, self.options):
            return given
        values, defaults = _values_and_defaults(given)
        accepted = self.option_names()
        for key, value in values.items():
            if key not in accepted and (key not in defaults or value not in defaults[key]):
                raise ConfigError(
                    f"Option `adapter.{key}`={value!r} does not apply to method '{self.name}'; "
                    f"it accepts {', '.join(sorted(accepted))}."
                )
        return self.options(**{k: v for k, v in values.items() if k in accepted})

    # ---- options, identity, label
    # options a label shows by their value alone (``lora r=8 qkv+mlp``, ``adapter r=16 last:6``); others as k=v
    label_plain: ClassVar[tuple[str, ...]] = ("placement", "targets")

    def section_options(self, given: Any) -> Any:
        """The options object of the method's own section ``given`` (``lora: {rank: 8}``: None, a mapping or
        its options dataclass); unlike the legacy ``adapter:`` section, every key must be one of its options.

        Raises:
            ConfigError: a key it does not take (with the closest of its options), a bad value.
        """
        if given is None or (self.options is not None and isinstance(given, self.options)):
            return given
        if dataclasses.is_dataclass(given) and not isinstance(given, type):
            given = dataclasses.asdict(given)
        if not isinstance(given, Mapping):
            raise ConfigError(f"`{self.name}` must be a mapping of its options, got {given!r}.")
        accepted = self.option_names()
        for key in given:
            if key not in accepted:
                close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6)
                hint = f" Did you mean `{self.name}.{close[0]}`?" if close else ""
                takes = f"It takes {', '.join(accepted)}" if accepted else "It takes no options"
                raise ConfigError(f"Unknown option `{self.name}.{key}` of method '{self.name}'.{hint} {takes}.")
        return self.options(**given) if self.options else None

    def identity(self, options: Any) -> dict[str, Any]:
        """The options that tell two trained variants apart: an adapter file must match them to load, and a
        report cell holds one value of them. Default: every field; a method may drop fields that do not change
        what trains (a kernel choice, a logging switch)."""
        return dataclasses.asdict(options) if options is not None else {}

    def label(self, options: Any) -> str:
        """How reports and the console name the variant: the name, ``r=<rank>`` when the method has a rank,
        then the identity fields that differ from their defaults (:attr:`label_plain` ones by value alone):
        ``lora r=8 qkv+mlp``, ``adapter r=16 last:6 init=small``, ``head``."""
        ident = self.identity(options)
        if not ident:
            return self.name
        defaults = {f.name: _default(f) for f in dataclasses.fields(self.options)} if self.options else {}
        parts = [self.name, *([f"r={ident['rank']}"] if "rank" in ident else [])]
        plain = [k for k in self.label_plain if k in ident]
        for key in [*plain, *(k for k in ident if k not in plain and k != "rank")]:
            if key in defaults and ident[key] == defaults[key]:
                continue
            text = ",".join(map(str, ident[key])) if isinstance(ident[key], list | tuple) else str(ident[key])
            parts.append(text if key in plain else f"{key}={text}")
        return " ".join(parts)

    def build(self, model: nn.Module, options: Any) -> nn.Module:
        """Apply the method to ``model`` (a backbone with a fresh head) in place; freeze what it keeps frozen.

        The default, for a method with a ``slot``: its modules as the set ``default`` (:meth:`add_set`).
        """
        if self.slot is None:
            raise NotImplementedError(f"Method '{self.name}' does not implement build().")
        return self.add_set(model, options, DEFAULT_SET)

    # ------------------------------------------------------------ many tasks on one backbone
    def attach(
        self, backbone: nn.Module, task: str, options: Any, tensors: dict[str, torch.Tensor], source: str
    ) -> None:
        """Add task ``task``'s trained tensors (the adapter file's, head excluded) to a shared ``backbone``.

        The default: with a ``slot``, the method's modules as set ``task`` (:meth:`add_set`) filled with the
        file's tensors (:meth:`load_set`); without one (methods that train only the head), the file must hold
        nothing else.

        Raises:
            ConfigError: the set cannot join this backbone (a name taken, another kind in the slot).
            CheckpointError: the tensors do not fit the rebuilt set (nothing is left attached then).
        """
        if self.slot is None:
            if tensors:
                raise CheckpointError(
                    f"'{source}' ({self.name}) holds tensors other than the head: {sorted(tensors)[:3]}."
                )
            return
        try:
            self.add_set(backbone, options, task)
        except ConfigError as e:
            raise ConfigError(f"Task '{task}' ({source}): {e}") from None
        try:
            self.load_set(backbone, task, tensors)
        except CheckpointError as e:
            self.slot.detach(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        """Make this method's task ``task`` the one the backbone runs (None: none of this method's tasks)."""
        if self.slot is not None:
            self.slot.activate(backbone, task)

    def detach(self, backbone: nn.Module, task: str) -> None:
        """Remove task ``task``'s tensors from the backbone."""
        if self.slot is not None:
            self.slot.detach(backbone, task)

    # ------------------------------------------------------------ export, cost, training inputs
    def merge(self, model: nn.Module) -> bool:
        """Fold the method's extra modules into plain backbone weights before export; True if it did."""
        return False

    def export_formats(self) -> tuple[str, ...]:
        """The export formats this method's runs can be written in (``adaptertune export --format``)."""
        return ("pt", "onnx", *(("timm",) if self.plain_after_merge else ()), *(("peft",) if self.peft_format else ()))

    def save_peft(self, model: nn.Module, base: nn.Module, options: Any, directory: str, base_model_id: str) -> None:
        """Write trained ``model``'s tensors as a PEFT folder that ``PeftModel.from_pretrained(base, directory)``
        loads (``base``: a fresh copy of the backbone with the run's head size; ``peft_format`` methods only)."""
        raise NotImplementedError(f"Method '{self.name}' has no PEFT form.")

    def step_flops(self, geom: ViTGeometry, options: Any) -> StepFlops | None:
        """Matmul FLOPs of one training step for one image (None: no formula for this method)."""
        return None

    def prepare_fit(self, model: nn.Module, loaders: tuple, ctx: FitContext) -> FitInputs:
        """The model and loaders ``fit`` trains on; the default is the built model on the run's loaders."""
        return FitInputs(model, loaders)

    # ---- cost
    slot: ClassVar[type[BlockSlot] | None] = None

    def trainable_params(self, geom: ViTGeometry, options: Any, num_classes: int) -> int | None:
        """Trainable parameters of the built model, head included, by formula (pure arithmetic on ``geom``);
        None: no formula (the tests require one of every registered method)."""
        return None

    def frozen_prefix(self, model: nn.Module, options: Any) -> int:
        """How many leading blocks the method leaves untouched: nothing in them or before them trains and none
        of its hooks there changes between epochs, so ``train.cache_prefix`` may run them once per image (0:
        something before block 0 trains, e.g. prompts on the input tokens or a scale on the patch embedding).

        The default reads the built ``model``: the first block with a trainable parameter or any forward hook
        (0 if the embedding has either). A method whose hooks train nothing before block k says k.
        """
        embed, tensors = embedding_parts(model)
        if any(_touched(m) for m in embed) or any(p.requires_grad for p in tensors):
            return 0
        blocks = backbone_blocks(model)
        return next((i for i, b in enumerate(blocks) if _touched(b)), len(blocks))

    def slot_modules(self, model: nn.Module, options: Any) -> dict[int, nn.Module]:
        """One task's modules for :attr:`slot`, by block index (methods with a slot)."""
        raise NotImplementedError(f"Method '{self.name}' has a slot but does not implement slot_modules().")

    def add_set(self, model: nn.Module, options: Any, name: str) -> nn.Module:
        """Put :meth:`slot_modules` into the blocks' slots as set ``name``, make it the active set, and train it
        (the parameters its modules left trainable) and the head alone."""
        self.slot.attach(model, name, self.slot_modules(model, options))
        self.slot.activate(model, name)
        head, own = set(head_parameter_names(model)), f".{self.slot.attr}.{name}."
        for n, p in model.named_parameters():
            p.requires_grad_(n in head or own in n and p.requires_grad)  # a part its modules freeze stays frozen
        return model

    def load_set(self, model: nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Copy an adapter file's tensors (the built model's names, set ``default``, head excluded) into set
        ``name``.

        Raises:
            CheckpointError: the names or shapes differ from the set's trainable tensors.
        """
        own, theirs = f".{self.slot.attr}.{name}.", f".{self.slot.attr}.{DEFAULT_SET}."
        target = {n: p for n, p in model.named_parameters() if own in n and p.requires_grad}
        copy_set_tensors(target, tensors, theirs, own, self.name)

    # ---- nested ranks: a run that trains every rank of a grid at once (AdapterTune's ``adapter.nested``)
    def eval_ranks(self, options: Any) -> tuple[int, ...]:
        """The ranks a finished run evaluates its selected model at (its rank curve); () for none."""
        return ()

    def set_eval_rank(self, model: nn.Module, rank: int | None) -> None:
        """Run ``model`` at ``rank`` outside training (None: full; 0: head only); methods with nested ranks."""
        raise ConfigError(f"Method '{self.name}' has no nested ranks: a run of it serves its trained size only.")

    def truncate(self, tensors: dict[str, torch.Tensor], options: Any, rank: int) -> tuple[dict[str, Any], Any]:
        """A nested run's trained tensors and options as those of a plain model of rank ``rank``."""
        raise ConfigError(f"Method '{self.name}' has no nested ranks: its adapter files cannot be truncated.")


def _load_plugins() -> None:
    from .plugins import load_plugins  # the entry points and ADAPTERTUNE_PLUGINS (methods/plugins.py)

    load_plugins(_accept)


def _accept(obj: Any) -> None:
    """Register what an entry point names, unless importing it registered it: a Method instance or subclass."""
    method = obj() if isinstance(obj, type) and issubclass(obj, Method) else obj
    if isinstance(method, Method) and method.name not in METHODS:  # (the registry is loading: no recursion)
        register_method(method)


METHODS: Registry[Method] = Registry("method", load=_load_plugins)


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`.

    Raises:
        KeyError: the name is taken.
    """
    if not method.name or not isinstance(method, Method):
        raise ConfigError(f"A method must be a named Method instance, got {method!r}.")
    if method.name in (*RUN_KEYS, "options"):  # its options section would be one of RunConfig's own keys
        raise ConfigError(f"A method cannot be named '{method.name}': {', '.join(RUN_KEYS)} are run config keys.")
    return METHODS.register(method)


def unregister_method(name: str) -> Method:
    """Remove method ``name`` from :data:`METHODS` (for tests and plugins that register temporarily)."""
    return METHODS.unregister(name)


def option_defaults() -> dict[str, tuple[Any, ...]]:
    """Every option key of the registered methods with the defaults the methods give it (one per method)."""
    out: dict[str, tuple[Any, ...]] = {}
    for m in METHODS:
        for f in dataclasses.fields(m.options) if m.options else ():
            if (value := _default(f)) not in out.get(f.name, ()):
                out[f.name] = (*out.get(f.name, ()), value)
    return out


def resolve_options(method: str, sections: Mapping[str, Any]) -> Any:
    """The options object of ``method`` from a run config's options sections (:attr:`RunConfig.options`).

    Its own section (``lora:``) and the legacy ``adapter:`` (the selected method's options, whatever the
    method) are merged; the same option given in both with different values is an error. Every other section
    is checked against its own method's options class and then ignored (a sweep base may carry several).

    Raises:
        UnknownNameError: a section that names no method.
        ConfigError: an option a section's method does not take, a bad value, a conflict.
    """
    info = METHODS.get(method)
    for name, given in sections.items():
        if name not in (method, LEGACY_OPTIONS):
            METHODS.get(name).section_options(given)
    if method == LEGACY_OPTIONS:  # its own section is also the legacy one: as tolerant
        return info.resolve(sections.get(method))
    own = info.section_options(sections.get(method))
    legacy = sections.get(LEGACY_OPTIONS)
    if own is None:  # no own section: the legacy one, or the method's defaults
        return info.resolve(legacy)
    if legacy is None:
        return own
    merged = dict(_values_and_defaults(legacy)[0])
    mine = sections[method] if isinstance(sections[method], Mapping) else dataclasses.asdict(own)
    for key, value in mine.items():
        if key in merged and merged[key] != value:
            raise ConfigError(
                f"`{LEGACY_OPTIONS}.{key}`={merged[key]!r} and `{method}.{key}`={value!r} disagree for method "
                f"'{method}' (`{LEGACY_OPTIONS}.*` is the selected method's options); give one of them."
            )
        merged[key] = value
    return info.resolve(merged)


def resolve_adapter_config(method: str, adapter: Any) -> Any:
    """The options of ``method`` for ``adapter`` (None, a mapping or a dataclass); see :meth:`Method.resolve`."""
    return METHODS.get(method).resolve(adapter)


def build_method(method: str, model: nn.Module, adapter: Any = None) -> nn.Module:
    """Apply ``method`` to ``model`` (in place) with options ``adapter`` (None: the method's defaults)."""
    info = METHODS.get(method)
    return info.build(model, info.resolve(adapter))


def _touched(module: nn.Module) -> bool:
    """``module`` or a child of it has a trainable parameter or a forward hook."""
    if any(m._forward_hooks or m._forward_pre_hooks for m in module.modules()):
        return True
    return any(p.requires_grad for p in module.parameters())


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def _values_and_defaults(given: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values, the defaults to compare them with): a mapping's are every method's, a dataclass's its own."""
    if given is None:
        return {}, {}
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        return dataclasses.asdict(given), {f.name: (_default(f),) for f in dataclasses.fields(given)}
    if isinstance(given, Mapping):
        return dict(given), option_defaults()
    raise ConfigError(f"`adapter` must be a mapping of method options, got {type(given).__name__} {given!r}.")


def _set_keys(given: Any) -> list[str]:
    values, defaults = _values_and_defaults(given)
    changed = [k for k, v in values.items() if k not in defaults or v not in defaults[k]]
    return changed or list(values)
