"""Training metrics: ``metrics.jsonl`` in the run directory, a rich progress bar, TensorBoard and W&B."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from visalign.errors import VisalignError
from visalign.runs import atomic_write_text
from visalign.vsfa.training.config import LoggingConfig

METRICS_FILE = "metrics.jsonl"
logger = logging.getLogger(__name__)


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """The logged steps of a run directory, in order (empty when none yet).

    A torn last line (the process was killed mid-write) is logged and left out, as :class:`visalign.runs.JsonlStore`
    does; the next training run rewrites the file without it.

    Raises:
        VisalignError: a line before the last is not a JSON object.
    """
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_text().split("\n"), start=1) if line.strip()]
    metrics = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            metrics.append(record)
        elif number == lines[-1][0]:
            logger.warning("%s:%d: ignoring a torn last line (%d bytes) left by an interrupted run",
                           path, number, len(line))  # fmt: skip
        else:
            raise VisalignError(f"{path}:{number}: corrupt line in the middle of the metrics file; "
                                "delete that line, or train into a new --out directory")  # fmt: skip
    return metrics


_TENSORBOARD_MISSING = "TensorBoard logging needs the tensorboard package: pip install 'visalign[tensorboard]'"
_TENSORBOARD_REQUIRED = f"{_TENSORBOARD_MISSING}, or set logging.tensorboard: false"
_WANDB_MISSING = "logging.wandb_project is set but wandb is not installed: pip install wandb, or remove the setting"


def check_logging_backends(config: LoggingConfig) -> None:
    """Fail at once, before any model is loaded, when a backend the config asks for is not installed.

    Raises:
        VisalignError: ``tensorboard: true`` without tensorboard, or ``wandb_project`` without wandb.
    """
    if config.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise VisalignError(_TENSORBOARD_REQUIRED) from None
    if config.wandb_project:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise VisalignError(_WANDB_MISSING) from None


def _tensorboard_writer(required: bool | None, folder: Path, console: Console):
    if required is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if required:
            raise VisalignError(_TENSORBOARD_REQUIRED) from None
        # escape: rich would read "[tensorboard]" in the install hint as a style tag and drop it
        console.print(f"[yellow]note:[/] {escape(_TENSORBOARD_MISSING)} (metrics still go to {METRICS_FILE})")
        return None
    return SummaryWriter(log_dir=str(folder))


def _wandb_run(config: LoggingConfig, run_config: dict, out: Path):
    if not config.wandb_project:
        return None
    try:
        import wandb
    except ImportError:
        raise VisalignError(_WANDB_MISSING) from None
    return wandb.init(project=config.wandb_project, name=config.wandb_run_name, config=run_config, dir=str(out))


class MetricsLogger:
    """Writes each step's metrics everywhere that is switched on; only the main process should log.

    Args:
        out: the run directory.
        config: the logging section of the job config.
        run_config: the whole job config (for W&B).
        total_steps: optimiser steps of the whole run (progress bar length).
        start_step: the step a resumed run starts from; logged steps after it are dropped (they are redone).
    """

    def __init__(self, out: Path, config: LoggingConfig, run_config: dict, *, total_steps: int, start_step: int):
        self.out = out
        self.config = config
        self.console = Console(stderr=True)
        kept = [m for m in read_metrics(out) if m["step"] <= start_step]
        atomic_write_text(out / METRICS_FILE, "".join(json.dumps(m) + "\n" for m in kept))
        self._file = (out / METRICS_FILE).open("a")
        self._tensorboard = _tensorboard_writer(config.tensorboard, out / "tensorboard", self.console)
        self._wandb = _wandb_run(config, run_config, out)
        self._progress = None
        if config.progress:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, status="")
            self._progress.start()

    def log(self, metrics: dict[str, Any]) -> None:
        """Record one optimiser step's metrics (``step`` plus numbers)."""
        step = metrics["step"]
        self._file.write(json.dumps(metrics) + "\n")
        self._file.flush()
        if self._progress is not None:
            status = (f"loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  |g| {metrics['grad_norm']:.3f}  "
                      f"{metrics['tokens_per_s']:,.0f} tok/s")  # fmt: skip
            self._progress.update(self._task, completed=step, status=status)
        if step % self.config.every:
            return
        numbers = {k: v for k, v in metrics.items() if k != "step" and isinstance(v, int | float)}
        if self._tensorboard is not None:
            for name, value in numbers.items():
                self._tensorboard.add_scalar(f"train/{name}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in numbers.items()}, step=step)

    def close(self) -> None:
        """Stop the progress bar and flush every sink."""
        if self._progress is not None:
            self._progress.stop()
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
