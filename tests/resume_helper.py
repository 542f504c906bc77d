"""Subprocess for the kill/resume tests: trains a run and SIGKILLs itself at a chosen point.

usage: python resume_helper.py CONFIG_JSON MODE N
  MODE step        SIGKILL after optimizer step N (1-based count of steps done)
  MODE epoch       SIGKILL at the end of epoch N (metrics line written, epoch checkpoint not yet)
  MODE checkpoint  SIGKILL during the N-th checkpoint write (temporary file written, not yet renamed)
"""

import json
import os
import signal
import sys

import torch

from adaptertune import atomic
from adaptertune.config import RunConfig
from adaptertune.runs import run


class KillAt:
    def __init__(self, mode: str, n: int) -> None:
        self.mode, self.n = mode, n

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        pass

    def on_step(self, step, loss, lr):
        if self.mode == "step" and step + 1 == self.n:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, metrics):
        if self.mode == "epoch" and metrics["epoch"] == self.n:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    cfg_json, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(int(os.environ.get("RESUME_TEST_THREADS", "1")))
    cfg = RunConfig.from_dict(json.loads(cfg_json))
    callbacks = []
    if mode in ("step", "epoch"):
        callbacks.append(KillAt(mode, n))
    else:
        real_replace, count = os.replace, [0]

        def replace(src, dst):
            if str(dst).endswith("checkpoint.safetensors"):
                count[0] += 1
                if count[0] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        atomic.os.replace = replace
    run(cfg, callbacks)
    sys.exit(3)  # not killed: the test's kill point was never reached


if __name__ == "__main__":
    main()
