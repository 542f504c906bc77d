"""Runs ``adaptertune train`` and SIGKILLs the (main) process once N optimizer steps are done (a killed job).

usage: python kill_train_helper.py N TRAIN_ARGS...   (also as the script of ``torchrun``)
"""

import os
import signal
import sys

from adaptertune.cli import main


class KillAtStep:
    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        pass

    def on_step(self, step, loss, lr):
        if step + 1 == self.n:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, metrics):
        pass


if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[2:]], callbacks=[KillAtStep(int(sys.argv[1]))]))
