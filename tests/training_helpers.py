"""Shared pieces of the training tests: a simulated interruption."""

from transformers import TrainerCallback


class Interrupted(Exception):
    pass


class StopAt(TrainerCallback):
    """Simulates an interruption (a killed kernel): raises once the given step has ended, which is
    before that step's checkpoint is saved."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise Interrupted
