"""Runs ``adaptertune train`` and SIGKILLs the (main) process once N optimizer steps are done (a killed job).

usage: python kill_train_helper.py N TRAIN_ARGS...   (also as the script of ``torchrun``)
"""

import os
import signal
import sys

from adaptertune.cli import main
from adaptertune.engine import Callback


class KillAtStep(Callback):
    def __init__(self, n: int) -> None:
        self.n = n

    def on_step(self, step, loss, lr):
        if step + 1 == self.n:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[2:]], callbacks=[KillAtStep(int(sys.argv[1]))]))
