"""Checkpoint averaging: the mean of the last few evaluations' weights, a plain model directory again.

Averaging the last checkpoints of a run smooths the noise of the final updates and usually adds BLEU at no
training cost (Vaswani et al. 2017 averaged the last 5 or 20; Popel & Bojar 2018, "Training Tips for the
Transformer Model", §4.10). The snapshots are the complete model directories ``snapshots/step-N`` that
:mod:`mtedge.train.loop` keeps when ``keep_snapshots`` is set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mtedge.errors import UserError
from mtedge.train.loop import SNAPSHOTS_DIR

WEIGHTS = "model.safetensors"


def list_snapshots(run_dir: Path) -> list[Path]:
    """A run's complete snapshots, oldest first."""
    root = Path(run_dir) / SNAPSHOTS_DIR
    if not root.is_dir():
        raise UserError(f"{run_dir} has no {SNAPSHOTS_DIR}/ (train with --keep-snapshots N to keep them)")
    found = sorted(p for p in root.iterdir()
                   if p.is_dir() and not p.name.endswith((".partial", ".old")) and (p / WEIGHTS).is_file())
    if not found:
        raise UserError(f"{root} holds no complete snapshot (a directory with {WEIGHTS})")
    return found


def average_snapshots(snapshots: list[Path], out_dir: Path, *, force: bool = False) -> Path:
    """Write the element-wise mean of the snapshots' weights, with the newest snapshot's config, tokenizer and
    generation settings, to ``out_dir``. Integer tensors (buffers such as position ids) must agree."""
    import torch
    from safetensors.torch import load_file, save_file

    if not snapshots:
        raise UserError("no snapshots to average")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not force:
            raise UserError(f"{out_dir} already exists; pass --force to replace it")
        shutil.rmtree(out_dir)
    total: dict[str, torch.Tensor] = {}
    first_keys = None
    for snapshot in snapshots:
        weights = load_file(str(snapshot / WEIGHTS))
        if first_keys is None:
            first_keys = set(weights)
        elif set(weights) != first_keys:
            raise UserError(f"{snapshot} holds other tensors than {snapshots[0]}: not the same model")
        for name, tensor in weights.items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
            elif name in total and not torch.equal(total[name], tensor):
                raise UserError(f"{snapshot}: integer tensor {name} differs between snapshots")
            else:
                total[name] = tensor
    newest = load_file(str(snapshots[-1] / WEIGHTS))
    averaged = {name: (t / len(snapshots)).to(newest[name].dtype) if newest[name].is_floating_point() else t
                for name, t in total.items()}
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(snapshots[-1], staging)
    save_file(averaged, str(staging / WEIGHTS), metadata={"format": "pt"})
    (staging / "averaged_from.json").write_text(json.dumps(
        {"snapshots": [p.name for p in snapshots], "count": len(snapshots)}, indent=2) + "\n", encoding="utf-8")
    staging.rename(out_dir)
    return out_dir
