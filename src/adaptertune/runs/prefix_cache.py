"""``train.cache_prefix``: the inputs ``fit`` trains on when the frozen blocks before the first trained one
run once per image (see :mod:`adaptertune.engine.prefix`)."""

from __future__ import annotations

import dataclasses
import logging

from torch import nn

from ..engine import FitResult
from ..engine.distributed import DistInfo
from ..engine.prefix import PrefixTail, TokenLoader, extract_prefix, first_trained_block
from ..errors import ConfigError
from ..methods import FitContext, FitInputs

__all__ = ["prefix_fit_inputs"]

_logger = logging.getLogger(__name__)


def prefix_fit_inputs(model: nn.Module, inputs: FitInputs, ctx: FitContext, dist: DistInfo, method: str) -> FitInputs:
    """Tokens after the frozen prefix of the (unaugmented) train / val / test views, and the tail that trains.

    Raises:
        ConfigError: the method trains on inputs of its own (cached features), or its first trained
            block is block 0 (nothing to cache).
    """
    if inputs.model is not model:
        raise ConfigError(f"`train.cache_prefix` does not apply to method '{method}': it caches its own inputs.")
    k = first_trained_block(model)
    if k == 0:
        raise ConfigError(
            f"`train.cache_prefix` needs the trained parts of '{method}' to start after block 0 (e.g. adapter "
            "placement last:4); here block 0 or the embedding trains. Turn the cache off."
        )
    loaders, skipped, seconds, n = [], [0, 0, 0], 0.0, 0
    for i, view in enumerate(ctx.views):
        if view is None:
            loaders.append(None)
            continue
        tokens, labels, s, t = extract_prefix(model, k, ctx.loader(view), ctx.device, ctx.precision)
        skipped[i], seconds, n = s, seconds + t, n + len(labels)
        loaders.append(TokenLoader(tokens, labels, ctx.batch_size, shuffle=i == 0, seed=ctx.seed, dist=dist))
        if i == 0:
            width = tokens[0].numel() * tokens.element_size()
    _logger.info("cached the output of block %d for %d images (%.1f MiB each 1000) in %.1f s",
                 k - 1, n, width * 1000 / 2**20, seconds)  # fmt: skip
    tail = PrefixTail(model, k)

    def finish(result: FitResult) -> FitResult:
        state = {name.removeprefix("model."): v for name, v in result.best_state.items()}
        total = result.train_seconds + seconds
        return inputs.finish(
            dataclasses.replace(
                result,
                best_state=state,
                train_seconds=total,
                images_per_second=result.images_per_second * result.train_seconds / max(total, 1e-9),
                skipped_images=result.skipped_images + skipped[0],
                test={**result.test, "skipped": skipped[2]},
                test_last={**result.test_last, "skipped": skipped[2]},
            )
        )

    return FitInputs(tail, tuple(loaders), finish)
