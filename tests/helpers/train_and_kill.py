"""`asr train OVERRIDES...` in a process that SIGKILLs itself (no cleanup, as `kill -9`) right
after optimizer step $KILL_AT; without KILL_AT it trains to the end. Used by test_resilience."""

import os
import signal
import sys

import lightning as L

from asr.train import compose, run_train


class KillAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    run_train(compose(sys.argv[1:]), callbacks=[KillAtStep(int(os.environ.get("KILL_AT", "-1")))])
