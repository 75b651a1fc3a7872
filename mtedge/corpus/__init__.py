"""Translating a whole corpus file on Ray Data, resumably (``mtedge translate-corpus``, extra
``mtedge[distributed]``).

How a run goes, and which module does what:

1. ``source``: the driver reads the input once — row count, where each shard of ``shard_rows`` rows
   starts, a hash of each shard's input bytes, and the malformed rows (so ``--on-error fail`` stops
   before anything starts). Rows are numbered from 1; that number is the row's id everywhere.
2. ``store``: the shard directory (numbered shard files + ``manifest.json``). Shards whose file,
   row count and hashes verify against the manifest — and whose input is unchanged — are reused.
3. ``ray_job``: the remaining shards are read by Ray Data tasks (one read task per shard) and
   translated by an actor pool of ``Translator``\\ s, each created inside its actor. The driver
   collects the rows by id and writes a shard as soon as all its rows are back: a killed run loses
   only the shards in flight.
4. ``store`` again: the output file is assembled from the shards, in row order.

``run`` ties them together. Nothing here imports ray at module level: only ``ray_job``'s functions do,
so ``mtedge --help`` and the base install stay ray-free.
"""

from mtedge.corpus.run import CorpusReport, translate_corpus

__all__ = ["CorpusReport", "translate_corpus"]
