"""One rank of the 2-process gloo test (tests/test_distributed.py): rank 1's second batch is all corrupt.

usage: python ddp_helper.py RANK WORLD_SIZE STORE_FILE OUT_DIR
Trains a tiny MLP with dropout for one epoch of 3 steps (checkpoint every step), then resumes from the
final checkpoint, and writes what the test compares to OUT_DIR/rank{RANK}.json.
"""

import datetime
import json
import sys
from pathlib import Path

import torch
from torch import nn

from adaptertune.config import TrainConfig
from adaptertune.engine import Selection, fit
from adaptertune.engine.distributed import shutdown
from adaptertune.resolve import resolve_train_config


def main() -> None:
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(10 + rank)
    batches = [(torch.randn(4, 3, 2, 2, generator=g), torch.randint(0, 3, (4,), generator=g), 0) for _ in range(3)]
    if rank == 1:  # every image of this rank's second batch was corrupt and skipped by the collate
        batches[1] = (torch.empty(0), torch.empty(0, dtype=torch.long), 4)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.05, weight_decay=0.0, device="cpu", checkpoint_every_steps=1)
    cfg, last = resolve_train_config(cfg), Selection.LAST_EPOCH
    ckpt = out / "checkpoint.safetensors"
    result = fit(model, batches, None, batches[:1], cfg, torch.device("cpu"), checkpoint_path=ckpt, selection=last)
    draw = torch.rand(3).tolist()  # this rank's dropout stream after training
    resumed = fit(
        model, batches, None, batches[:1], cfg, torch.device("cpu"), checkpoint_path=ckpt, resume=True, selection=last
    )
    params = [p.detach().flatten().tolist() for p in model.parameters()]
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "skipped": result.skipped_images,
                "skipped_resumed": resumed.skipped_images,
                "draw": draw,
                "params": params,
            }
        )
    )
    shutdown()


if __name__ == "__main__":
    main()
