"""Fine-tuning methods: which weights train, and how (PEFT LoRA, AdaLoRA, IA3, or every weight).

Every PEFT method here merges back into plain weights, so a fine-tuned model exports like any other.
Full fine-tuning can leave parts frozen (``freeze``): the encoder (decoder-only fine-tuning, which keeps
the source representations the model was trained with), the decoder, or the embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mtedge.errors import UserError
from mtedge.families import FAMILIES

METHODS = ("lora", "adalora", "ia3", "full")
PEFT_METHODS = ("lora", "adalora", "ia3")
FREEZABLE = ("encoder", "decoder", "embeddings")



def default_targets(family: str, method: str) -> tuple[str, ...]:
    """The modules a PEFT method adapts when the user names none (module names: mtedge.families).

    LoRA on every attention projection adapts a translation model to a domain well for few parameters;
    the feed-forward layers add many parameters for little gain at small ranks. IA3 as in its paper
    (Liu et al. 2022): rescale keys, values and the feed-forward intermediate activations."""
    return FAMILIES[family].ia3_modules if method == "ia3" else FAMILIES[family].attention_modules


@dataclass
class MethodSettings:
    """What ``mtedge train`` was asked to train; recorded in ``run.json`` and the merged provenance."""

    method: str = "lora"
    target_modules: list[str] | None = None   # None: the family's defaults
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    freeze: list[str] = field(default_factory=list)   # parts kept fixed in full fine-tuning (FREEZABLE)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def check_method(settings: MethodSettings) -> None:
    """Cheap checks, run before any model is loaded."""
    if settings.method not in METHODS:
        raise UserError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
    if settings.method == "full" and settings.target_modules:
        raise UserError("--target-modules applies to lora and ia3; --method full trains every weight")
    unknown = [part for part in settings.freeze if part not in FREEZABLE]
    if unknown:
        raise UserError(f"--freeze {','.join(unknown)}: unknown part; choose from {', '.join(FREEZABLE)}")
    if settings.freeze and settings.method != "full":
        raise UserError(f"--freeze applies to --method full ({settings.method} trains only its adapters; "
                        f"choose where they go with --target-modules)")
    if set(FREEZABLE) <= set(settings.freeze):
        raise UserError("--freeze encoder,decoder,embeddings leaves nothing to train")
    if settings.method in ("lora", "adalora"):
        if settings.lora_r < 1:
            raise UserError(f"--lora-r must be at least 1, got {settings.lora_r}")
        if not 0.0 <= settings.lora_dropout < 1.0:
            raise UserError(f"--lora-dropout must be in [0, 1), got {settings.lora_dropout}")


def linear_module_names(model) -> dict[str, list[str]]:
    """Short name (last dotted part) -> full names of every ``nn.Linear`` in ``model``."""
    import torch

    names: dict[str, list[str]] = {}
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            names.setdefault(full_name.rsplit(".", 1)[-1], []).append(full_name)
    return dict(sorted(names.items()))


def _matches(full_name: str, target: str) -> bool:
    # PEFT's own rule for a list of targets: the whole name, or a dotted suffix of it.
    return full_name == target or full_name.endswith("." + target)


def _embeddings_tied(model) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


def resolve_target_modules(model, family: str, settings: MethodSettings) -> list[str]:
    """The modules the PEFT method adapts: the user's (each checked to exist) or the family's defaults."""
    targets = list(settings.target_modules or default_targets(family, settings.method))
    linear = linear_module_names(model)
    head = model.get_output_embeddings()
    if _embeddings_tied(model):
        # A merged delta on lm_head would also change the tied input embeddings (and the Marian pad row).
        linear = {short: [n for n in fulls if model.get_submodule(n) is not head] for short, fulls in linear.items()}
        linear = {short: fulls for short, fulls in linear.items() if fulls}
    all_full_names = [n for fulls in linear.values() for n in fulls]
    example = ".".join(all_full_names[0].split(".")[-2:])
    for target in targets:
        if head is not None and _embeddings_tied(model) and any(
                _matches(n, target) and model.get_submodule(n) is head for n, _ in model.named_modules()):
            raise UserError(f"target module {target!r} is the output projection, tied to the input embeddings; "
                            f"adapt the attention/feed-forward modules instead, or use --method full")
        if not any(_matches(n, target) for n in all_full_names):
            raise UserError(
                f"target module {target!r} is not in this {family} model; its adaptable linear modules are: "
                f"{', '.join(linear)} (a dotted suffix such as {example} narrows the match)")
    return targets


def peft_config(model, family: str, settings: MethodSettings, total_steps: int | None = None):
    """The PEFT config for ``settings`` (``None`` for full fine-tuning); AdaLoRA needs ``total_steps``."""
    from peft import AdaLoraConfig, IA3Config, LoraConfig, TaskType

    if settings.method == "full":
        return None
    targets = resolve_target_modules(model, family, settings)
    if settings.method == "lora":
        return LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=settings.lora_r, lora_alpha=settings.lora_alpha,
                          lora_dropout=settings.lora_dropout, target_modules=targets, bias="none")
    if settings.method == "adalora":
        # AdaLoRA (Zhang et al. 2023) starts every adapter at 1.5x the target rank and prunes the budget to
        # --lora-r on average between tinit and total_steps - tfinal, by importance; its allocator needs the
        # step count up front and a call after every optimizer step (AdaLoraStepHook).
        steps = max(int(total_steps or 0), 10)
        tinit, tfinal = steps // 10, steps // 5
        return AdaLoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, init_r=max(settings.lora_r * 3 // 2, settings.lora_r),
                             target_r=settings.lora_r, lora_alpha=settings.lora_alpha,
                             lora_dropout=settings.lora_dropout, target_modules=targets, total_step=steps,
                             tinit=tinit, tfinal=tfinal, deltaT=max(1, (steps - tinit - tfinal) // 20))
    feedforward = [t for t in targets if t.rsplit(".", 1)[-1] in FAMILIES[family].feedforward_modules]
    return IA3Config(task_type=TaskType.SEQ_2_SEQ_LM, target_modules=targets, feedforward_modules=feedforward)


def apply_method(model, family: str, settings: MethodSettings, total_steps: int | None = None):
    """``model`` ready to train with ``settings``: wrapped by PEFT, or with every weight trainable but the
    frozen parts. Returns ``(model, method_config)``, the config as a JSON-able dict for the records.
    """
    from peft import get_peft_model

    config = peft_config(model, family, settings, total_steps)
    if config is None:
        # The model's own requires_grad flags already say what trains: everything but Marian's sinusoidal
        # position table, which must stay fixed (CTranslate2 recomputes it rather than reading it).
        frozen = freeze_parts(model, settings.freeze)
        return model, {"method": "full", "frozen": settings.freeze, "frozen_parameters": frozen,
                       "trainable_parameters": count_trainable(model)}
    wrapped = get_peft_model(model, config)
    record = json_safe(config.to_dict())
    record["trainable_parameters"] = count_trainable(wrapped)
    return wrapped, record


def freeze_parts(model, parts) -> int:
    """Stop gradients to ``parts`` (FREEZABLE); returns how many parameters that froze.

    The shared embedding (tied to ``lm_head``) belongs to "embeddings", not to the encoder or decoder that
    read it, so ``--freeze encoder`` trains the decoder and the embeddings, ``--freeze encoder,embeddings``
    the decoder layers alone.
    """
    embeddings = {id(model.get_input_embeddings().weight), id(model.get_decoder().get_input_embeddings().weight)}
    if model.get_output_embeddings() is not None:
        embeddings.add(id(model.get_output_embeddings().weight))
    chosen = {id(p) for p in model.parameters() if id(p) in embeddings} if "embeddings" in parts else set()
    for part, module in (("encoder", model.get_encoder()), ("decoder", model.get_decoder())):
        if part in parts:
            chosen |= {id(p) for p in module.parameters() if id(p) not in embeddings}
    frozen = 0
    for param in model.parameters():
        if id(param) in chosen and param.requires_grad:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


class AdaLoraStepHook:
    """AdaLoRA's rank allocation after every optimizer step, while the gradients are still there
    (PEFT: ``update_and_allocate(global_step)`` between ``optimizer.step()`` and ``zero_grad()``)."""

    def __call__(self, model, step: int) -> None:
        model.base_model.update_and_allocate(step)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def json_safe(value):
    """PEFT configs hold sets and enums; the records want plain JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = [json_safe(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set) else items
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return getattr(value, "value", str(value))
