"""The benchmark harness behind ``mtedge bench`` (see ``mtedge.bench.api.bench``).

Imports nothing heavy: the workers (``mtedge.bench.worker``) load each engine's stack in
their own process.
"""
