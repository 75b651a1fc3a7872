"""The training loop every training command shares (``pretrain``, ``train`` with LoRA/IA3/full).

What it does, whatever is being trained:
- token-budget batches (:mod:`mtedge.train.batching`), gradient accumulation, warmup then decay;
- bf16 autocast where the hardware runs it faster (:mod:`mtedge.train.precision`); weights, optimizer state
  and the loss stay fp32;
- a dev evaluation every ``eval_every`` optimizer steps: sacrebleu BLEU and chrF with signatures, one line of
  ``train_log.jsonl`` each; the best dev BLEU is kept in ``best/``, the last state in ``checkpoint/``, and the
  weights of the last ``keep_snapshots`` evaluations in ``snapshots/`` for checkpoint averaging
  (:mod:`mtedge.train.averaging`);
- early stopping after ``patience`` evaluations without improvement;
- resume: a run pointed at a directory holding ``checkpoint/`` carries on from it, seeing exactly the
  batches an uninterrupted run would have seen;
- a NaN/inf loss stops the run with a clear message, leaving the last good checkpoint untouched;
- Ctrl-C writes a resumable checkpoint before the interrupt propagates; so does SIGTERM (``kill``, a job
  scheduler), at the next step boundary: a job started in the background from a script ignores SIGINT, so
  without this ``kill`` lost every step since the last evaluation.

The caller says how a model is saved and restored (``save_model``/``load_model``): full weights for
pretraining and full fine-tuning, adapter weights for PEFT.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from mtedge import metrics
from mtedge.errors import UserError
from mtedge.train.batching import epoch_order, pair_batches
from mtedge.train.encoded_cache import load_or_encode
from mtedge.train.precision import resolve_precision

CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"
SNAPSHOTS_DIR = "snapshots"
LOG_NAME = "train_log.jsonl"
STATE_NAME = "trainer_state.pt"


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN); the message says what was kept."""


@dataclass
class LoopConfig:
    max_steps: int = 1000                # optimizer steps
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    decay: str = "inverse_sqrt"          # inverse_sqrt | linear | constant (after warmup)
    batch_tokens: int = 4096             # padded source+target tokens per micro-batch
    grad_accum: int = 1                  # micro-batches per optimizer step
    eval_every: int = 200                # optimizer steps between dev evaluations
    eval_max_sentences: int = 500        # dev sentences decoded per evaluation
    eval_beams: int = 1
    eval_batch_size: int = 32
    patience: int = 0                    # evaluations without a better dev BLEU before stopping (0: never)
    max_source_length: int = 128         # tokens; longer training pairs are truncated
    max_target_length: int = 128
    seed: int = 0
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    device: str = "auto"                 # auto | cpu | cuda
    threads: int | None = None           # torch intra-op threads on CPU
    max_wall_seconds: float | None = None  # stop (resumably) after this much training time
    precision: str = "fp32"              # fp32 | bf16 | auto (bf16 where the hardware runs it faster)
    keep_snapshots: int = 0              # weights of the last N evaluations, for checkpoint averaging


@dataclass
class LoopResult:
    out_dir: Path
    best_dir: Path | None
    best_step: int | None
    best_bleu: float | None
    best_chrf: float | None
    signatures: dict
    steps: int
    stopped: str                          # max_steps | early_stopping | time_limit
    wall_seconds: float
    history: list = field(default_factory=list)


# -- evaluation --------------------------------------------------------------------------------
def evaluate(model, tokenizer, pairs, config: LoopConfig, device) -> dict:
    """Greedy (or ``eval_beams``) translations of ``pairs`` scored by :mod:`mtedge.metrics`."""
    import torch

    pairs = pairs[: config.eval_max_sentences]
    sources = [s for s, _ in pairs]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hyps: list[str | None] = [None] * len(sources)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), config.eval_batch_size):
            idx = order[start:start + config.eval_batch_size]
            enc = tokenizer([sources[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                            max_length=config.max_source_length).to(device)
            out = model.generate(**enc, num_beams=config.eval_beams, do_sample=False,
                                 max_new_tokens=config.max_target_length)
            for i, text in zip(idx, tokenizer.batch_decode(out, skip_special_tokens=True)):
                hyps[i] = text
    if was_training:
        model.train()
    refs = [t for _, t in pairs]
    bleu, chrf = metrics.corpus_bleu(hyps, refs), metrics.corpus_chrf(hyps, refs)
    # rounded before best-BLEU comparisons too, so a resumed run decides as the log reads
    return {"bleu": metrics.rounded(bleu.score), "chrf": metrics.rounded(chrf.score),
            "signature": {"bleu": bleu.signature, "chrf": chrf.signature},
            "n": len(pairs), "sample": [h[:200] for h in hyps[:3]]}


# -- helpers -----------------------------------------------------------------------------------
def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def _lr_lambda(config: LoopConfig):
    warmup = max(1, config.warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.decay == "constant":
            return 1.0
        if config.decay == "linear":
            return max(0.0, (config.max_steps - step) / max(1, config.max_steps - warmup))
        return math.sqrt(warmup / (step + 1))  # inverse_sqrt (Vaswani et al.)

    return factor


def encode_pairs(tokenizer, pairs, config: LoopConfig) -> list[tuple[list[int], list[int]]]:
    """Token ids of every pair, once (the slow sentencepiece tokenizers are not cheap)."""
    encoded = []
    chunk = 1024
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        enc = tokenizer([s for s, _ in part], text_target=[t for _, t in part], truncation=True,
                        max_length=config.max_source_length)
        for src_ids, tgt_ids in zip(enc["input_ids"], enc["labels"]):
            encoded.append((src_ids, tgt_ids[: config.max_target_length]))
    return encoded


def _collate(encoded, indices, pad_id: int, device):
    import torch

    batch = [encoded[i] for i in indices]
    src_len = max(len(s) for s, _ in batch)
    tgt_len = max(len(t) for _, t in batch)
    input_ids = torch.full((len(batch), src_len), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), src_len), dtype=torch.long)
    labels = torch.full((len(batch), tgt_len), -100, dtype=torch.long)
    for row, (src, tgt) in enumerate(batch):
        input_ids[row, :len(src)] = torch.tensor(src)
        attention[row, :len(src)] = 1
        labels[row, :len(tgt)] = torch.tensor(tgt)
    return input_ids.to(device), attention.to(device), labels.to(device)


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap ``staging`` in for ``target`` so that a crash leaves one complete copy, never half of one."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _sigterm_requests_stop():
    """Yield a one-element list that becomes ``[True]`` once SIGTERM arrives; the loop stops after the
    step in progress (never half-way through an optimizer update) and checkpoints."""
    requested = [False]
    if threading.current_thread() is not threading.main_thread():
        yield requested  # signal handlers can only be installed from the main thread
        return

    def handler(signum, frame):
        requested[0] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the loop ----------------------------------------------------------------------------------
class _Run:
    def __init__(self, model, tokenizer, train_pairs, dev_pairs, out_dir: Path, config: LoopConfig,
                 save_model, load_model, after_step, progress: bool, meta: dict | None, step_hook=None):
        import torch

        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.dev_pairs = list(dev_pairs)
        self.out_dir = Path(out_dir)
        self.save_model, self.load_model, self.after_step = save_model, load_model, after_step
        self.step_hook = step_hook
        self.progress, self.meta = progress, dict(meta or {})
        self.device = resolve_device(config.device)
        if config.threads and self.device.type == "cpu":
            torch.set_num_threads(config.threads)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.model.to(self.device)
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise UserError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, betas=(0.9, 0.98),
                                           eps=1e-9, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(config))
        self.loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=config.label_smoothing)
        self.pad_id = tokenizer.pad_token_id
        train_pairs = list(train_pairs)
        self.encoded = load_or_encode(self.out_dir, train_pairs, tokenizer,
                                      (config.max_source_length, config.max_target_length),
                                      lambda: encode_pairs(tokenizer, train_pairs, config))
        self.batches = pair_batches([(len(s), len(t)) for s, t in self.encoded], config.batch_tokens)
        # training state (what a checkpoint holds besides weights and optimizer)
        self.step, self.epoch, self.position = 0, 0, 0
        self.best_bleu, self.best_chrf, self.best_step, self.bad_evals = None, None, None, 0
        self.signatures: dict = {}
        self.history: list = []
        self.trained_seconds = 0.0
        self.loss_window: list[float] = []
        self.step_start: tuple[int, int] | None = None

    # -- persistence -------------------------------------------------------------------------
    def checkpoint_dir(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    def save_checkpoint(self) -> None:
        import torch

        staging = self.out_dir / (CHECKPOINT_DIR + ".partial")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        self.save_model(self.model, staging)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                    "state": self._state()}, staging / STATE_NAME)
        _replace_dir(staging, self.checkpoint_dir())

    def save_snapshot(self) -> None:
        """This evaluation's weights in ``snapshots/step-NNNNNNN``; only the last ``keep_snapshots`` stay."""
        root = self.out_dir / SNAPSHOTS_DIR
        staging = root / f"step-{self.step:07d}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        self.save_model(self.model, staging)
        _replace_dir(staging, root / f"step-{self.step:07d}")
        snapshots = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith((".partial", ".old")))
        for old in snapshots[:-self.config.keep_snapshots]:
            shutil.rmtree(old)

    def _state(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "position": self.position,
                "best_bleu": self.best_bleu, "best_chrf": self.best_chrf, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "signatures": self.signatures,
                "trained_seconds": self.trained_seconds, "config": asdict(self.config), "meta": self.meta}

    def try_resume(self) -> bool:
        import torch

        state_path = self.checkpoint_dir() / STATE_NAME
        if not state_path.is_file():
            return False
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        self.load_model(self.model, self.checkpoint_dir())
        self.model.to(self.device)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        random.setstate(saved["python_rng"])
        state = saved["state"]
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best_bleu, self.best_chrf = state["best_bleu"], state["best_chrf"]
        self.best_step, self.bad_evals = state["best_step"], state["bad_evals"]
        self.signatures, self.trained_seconds = state["signatures"], state["trained_seconds"]
        return True

    def log(self, record: dict) -> None:
        self.history.append(record)
        with open(self.out_dir / LOG_NAME, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    # -- steps -------------------------------------------------------------------------------
    def next_batch(self) -> list[int]:
        order = epoch_order(len(self.batches), self.config.seed, self.epoch)
        if self.position >= len(order):
            self.epoch, self.position = self.epoch + 1, 0
            order = epoch_order(len(self.batches), self.config.seed, self.epoch)
        batch = self.batches[order[self.position]]
        self.position += 1
        return batch

    def train_step(self) -> float:
        import torch

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # where the data stood before this step: an interrupted step is redone on resume, not skipped
        self.step_start = (self.epoch, self.position)
        total = 0.0
        for _ in range(self.config.grad_accum):
            input_ids, attention, labels = _collate(self.encoded, self.next_batch(), self.pad_id, self.device)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                logits = self.model(input_ids=input_ids, attention_mask=attention, labels=labels).logits
            loss = self.loss_fn(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1))
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the training loss became {loss.item()} at step {self.step + 1}; stopped. "
                    f"The last good checkpoint is {self.checkpoint_dir() if self.checkpoint_dir().exists() else 'none (no evaluation yet)'}"
                    f"; lower --learning-rate and resume or restart")
            (loss / self.config.grad_accum).backward()
            total += loss.item() / self.config.grad_accum
        if self.config.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.step_hook is not None:  # before the next zero_grad: AdaLoRA reads the gradients
            self.step_hook(self.model, self.step)
        self.step_start = None
        if self.after_step is not None:
            self.after_step(self.model)
        return total

    def run_eval(self, loss: float | None) -> None:
        started = time.perf_counter()
        scores = evaluate(self.model, self.tokenizer, self.dev_pairs, self.config, self.device)
        improved = self.best_bleu is None or scores["bleu"] > self.best_bleu
        if improved:
            self.best_bleu, self.best_chrf, self.best_step = scores["bleu"], scores["chrf"], self.step
            self.signatures, self.bad_evals = scores["signature"], 0
            staging = self.out_dir / (BEST_DIR + ".partial")
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            self.save_model(self.model, staging)
            _replace_dir(staging, self.out_dir / BEST_DIR)
        else:
            self.bad_evals += 1
        if self.config.keep_snapshots:
            self.save_snapshot()
        self.log({"step": self.step, "epoch": self.epoch, "train_loss": None if loss is None else round(loss, 4),
                  "lr": self.scheduler.get_last_lr()[0], "dev_bleu": scores["bleu"], "dev_chrf": scores["chrf"],
                  "dev_n": scores["n"], "best": improved, "eval_seconds": round(time.perf_counter() - started, 1),
                  "trained_seconds": round(self.trained_seconds, 1), "signature": scores["signature"],
                  "sample": scores["sample"]})
        self.save_checkpoint()


def train_loop(model, tokenizer, train_pairs, dev_pairs, out_dir: str | Path, config: LoopConfig, *,
               save_model: Callable, load_model: Callable, after_step: Callable | None = None,
               step_hook: Callable | None = None,
               progress: bool = True, meta: dict | None = None) -> LoopResult:
    """Train ``model`` (only its ``requires_grad`` parameters) and return where the best weights are.

    ``out_dir`` must exist. If it holds a ``checkpoint/``, training resumes from it. ``after_step(model)``
    runs after every optimizer step (e.g. re-zeroing Marian's pad row); ``step_hook(model, step)`` too, before
    the gradients are cleared (AdaLoRA's rank allocation reads them).
    """
    from tqdm.auto import tqdm

    if not train_pairs:
        raise UserError("no training pairs")
    if not dev_pairs:
        raise UserError("no dev pairs")
    run = _Run(model, tokenizer, train_pairs, dev_pairs, out_dir, config, save_model, load_model, after_step,
               progress, meta, step_hook)
    resumed = run.try_resume()
    bar = tqdm(total=config.max_steps, initial=run.step, disable=not progress, unit="step",
               desc="resumed" if resumed else "training", dynamic_ncols=True)
    started = time.perf_counter()
    with _sigterm_requests_stop() as terminate:
        try:
            return _loop_until_done(run, config, bar, started, terminate)
        except KeyboardInterrupt:
            if run.step_start is not None:
                run.epoch, run.position = run.step_start
            run.save_checkpoint()
            bar.close()
            raise KeyboardInterrupt(f"interrupted at step {run.step}; resumable checkpoint in {run.checkpoint_dir()}")


def _loop_until_done(run: _Run, config: LoopConfig, bar, started: float, terminate: list) -> LoopResult:
    stopped = "max_steps"
    if run.step == 0:
        run.run_eval(None)  # the starting point: what the model scores before any update
    while run.step < config.max_steps:
        tick = time.perf_counter()
        loss = run.train_step()
        run.trained_seconds += time.perf_counter() - tick
        run.loss_window = (run.loss_window + [loss])[-50:]
        bar.update(1)
        mean_loss = sum(run.loss_window) / len(run.loss_window)
        bar.set_postfix(loss=f"{mean_loss:.3f}", dev_bleu=run.best_bleu, refresh=False)
        if run.step % config.eval_every == 0 or run.step == config.max_steps:
            run.run_eval(mean_loss)
            if config.patience and run.bad_evals >= config.patience:
                stopped = "early_stopping"
                break
        if config.max_wall_seconds and time.perf_counter() - started > config.max_wall_seconds:
            run.save_checkpoint()
            stopped = "time_limit"
            break
        if terminate[0]:
            raise KeyboardInterrupt  # the step is complete: the checkpoint continues after it
    bar.close()
    best_dir = run.out_dir / BEST_DIR
    return LoopResult(out_dir=run.out_dir, best_dir=best_dir if best_dir.exists() else None,
                      best_step=run.best_step, best_bleu=run.best_bleu, best_chrf=run.best_chrf,
                      signatures=run.signatures, steps=run.step, stopped=stopped,
                      wall_seconds=round(run.trained_seconds, 1), history=run.history)
