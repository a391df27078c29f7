"""Training as users call it (`omnigpt.train`, `pretrain`, `finetune`): the trainer, with loss.png redrawn
in the run folder after each validation."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import Config
from ..train.trainer import TrainResult
from ..train.trainer import train as train_loop
from ..viz import plot_run


def train(config: Config, out_dir: str | Path, resume: bool = False, stop_at_step: Optional[int] = None,
          progress: bool = True, deadline: Optional[float] = None) -> TrainResult:
    """Pretrain a GPT on config.data.corpus, fine-tune on config.data.sources, or train a classifier, as the
    config says; checkpoints, metrics.jsonl and loss.png go to out_dir.

    resume: continue from out_dir's latest checkpoint, exactly as if the run had never stopped.
    stop_at_step: end (with a checkpoint) after this step without changing the schedule, which still runs to
    train.max_steps; a later `resume=True` carries on.
    deadline: a wall-clock time (`time.time()`) by which training ends, set-up included (see the trainer's).
    """
    return train_loop(config, out_dir, resume=resume, stop_at_step=stop_at_step, progress=progress,
                      after_validation=plot_run, deadline=deadline)
