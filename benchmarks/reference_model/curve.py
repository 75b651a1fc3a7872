"""The learning curve of a training run as a PNG: dev BLEU and chrF, and training loss, against optimizer
steps (bottom axis) and training hours (top axis), from the run's ``train_log.jsonl``.

    .venv/bin/python -m benchmarks.reference_model.curve benchmarks/reference_model/run/train_log.jsonl out.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot_learning_curve(log_path: Path, png: Path, title: str = "reference model: learning curve") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise SystemExit(f"{log_path} holds no evaluation")
    steps = [r["step"] for r in records]
    hours = [r["trained_seconds"] / 3600 for r in records]
    fig, (quality, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    quality.plot(steps, [r["dev_bleu"] for r in records], "o-", label="dev BLEU")
    quality.plot(steps, [r["dev_chrf"] for r in records], "s--", label="dev chrF")
    quality.set_xlabel("optimizer steps")
    quality.set_ylabel("score (greedy, bible+sysmsg dev)")
    quality.grid(alpha=0.3)
    quality.legend(loc="upper left")
    with_loss = [(s, r["train_loss"]) for s, r in zip(steps, records) if r["train_loss"] is not None]
    loss.plot([s for s, _ in with_loss], [v for _, v in with_loss], "o-", color="tab:red")
    loss.set_xlabel("optimizer steps")
    loss.set_ylabel("training loss (label-smoothed, mean of the last 50 steps)")
    loss.grid(alpha=0.3)
    if steps[-1] > 0 and hours[-1] > 0:
        per_step = hours[-1] / steps[-1]
        for axis in (quality, loss):
            top = axis.secondary_xaxis("top", functions=(lambda s: s * per_step, lambda h: h / per_step))
            top.set_xlabel("training hours (evaluations excluded)")
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(plot_learning_curve(Path(sys.argv[1]), Path(sys.argv[2])))
