"""Training: the shared loop (``loop``), from-scratch Marian (``pretrain``), PEFT fine-tuning and merging.

Everything here imports torch/transformers: it is the ``mtedge[train]`` extra, never the runtime.
"""
