"""``train.cache_prefix``: the inputs ``fit`` trains on when the frozen blocks before the first trained one
run once per image (see :mod:`adaptertune.engine.prefix`)."""

from __future__ import annotations

import logging

from torch import nn

from ..engine.cached import cache_views
from ..engine.distributed import DistInfo
from ..engine.prefix import PrefixTail, cacheable_prefix, extract_prefix
from ..errors import ConfigError
from ..methods import FitContext, FitInputs

__all__ = ["prefix_fit_inputs"]

_logger = logging.getLogger(__name__)


def prefix_fit_inputs(
    model: nn.Module, inputs: FitInputs, ctx: FitContext, dist: DistInfo, method: str, frozen: int
) -> FitInputs:
    """Tokens after the frozen prefix of the (unaugmented) train / val / test views, and the tail that trains
    (``frozen``: the leading blocks ``method`` leaves untouched, its ``Method.frozen_prefix``).

    Raises:
        ConfigError: the method trains on inputs of its own (cached features), or its first trained
            block is block 0 (nothing to cache).
    """
    if inputs.model is not model:
        raise ConfigError(f"`train.cache_prefix` does not apply to method '{method}': it caches its own inputs.")
    k = cacheable_prefix(model, frozen)
    if k == 0:
        raise ConfigError(
            f"`train.cache_prefix` needs the trained parts of '{method}' to start after block 0 (e.g. adapter "
            "placement last:4); here block 0 or the embedding trains. Turn the cache off."
        )
    cached = cache_views(
        lambda loader: extract_prefix(model, k, loader, ctx.device, ctx.precision),
        (None if view is None else ctx.loader(view) for view in ctx.views),
        ctx.batch_size,
        ctx.seed,
        dist,
    )
    tokens = cached.loaders[0].x  # (N, T, D) of the train view
    width = tokens[:1].numel() * tokens.element_size()
    _logger.info("cached the output of block %d for %d images (%.1f MiB each 1000) in %.1f s",
                 k - 1, cached.images, width * 1000 / 2**20, cached.seconds)  # fmt: skip
    return FitInputs(
        PrefixTail(model, k), cached.loaders, lambda result: inputs.finish(cached.result(result, _model_name))
    )


def _model_name(tail_name: str) -> str:
    """A :class:`PrefixTail` tensor name (``model.blocks.3...``) as the built model's."""
    return tail_name.removeprefix("model.")
