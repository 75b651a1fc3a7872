"""The Ray side of a corpus run: connect, read the pending shards with Ray Data, translate them with an
actor pool of ``Translator``\\ s, and hand every finished shard to the driver.

The choices, and why:
- one Ray Data read task per shard (a ``Datasource``): each reads its byte range (or Parquet rows) on a
  worker and checks it against the hash the driver took, so the driver ships shard boundaries, not text;
- ``map_batches`` over a callable class on a fixed-size actor pool: each actor builds its Translator
  once, in its own process — CTranslate2 is not fork-safe (CTranslate2 issue #1414) — and keeps it for
  every batch;
- actors reserve ``threads_per_actor`` CPUs each and read tasks none (they only split and parse
  lines): a pool that takes every CPU cannot starve the reads that feed it;
- rows come back in whatever order the actors finish. Each carries its shard and id, and the driver
  writes a shard when all its rows are back, sorted by id and checked to be exactly the shard's rows:
  no reliance on Ray's ordering, no lost or shifted row.

``ray`` is imported inside these functions only: this module must import without it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Callable

from mtedge.corpus.source import InputSpec, Shard, read_shard
from mtedge.errors import UserError

INSTALL_HINT = "pip install 'mtedge[distributed]'"
# the one option that goes to the actors' Translator rather than to its translate() (mtedge shortlist)
SHORTLIST_OPTION = "shortlist"


def import_ray():
    """``ray`` with Ray Data, or a one-line UserError naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (pulls pyarrow and pandas, which a bare `pip install ray` lacks)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "ray").split(".")[0]
        raise UserError(f"translating on Ray needs {missing}, which the base install leaves out; install it "
                        f"with: {INSTALL_HINT} (or 'mtedge[all]')") from None
    return ray


@contextlib.contextmanager
def session(address: str | None):
    """Yields ``(ray, where)``: connected to ``address``, or to a local Ray instance started here (and
    shut down afterwards). A process that is already connected (a notebook, the tests) keeps its
    connection, and ``address`` must then be left out."""
    ray = import_ray()
    if address is not None:
        _check_reachable(address)
    if ray.is_initialized():
        if address is not None:
            raise UserError(f"this process is already connected to Ray; cannot connect to {address} as well")
        yield ray, "the Ray instance this process is connected to"
        return
    options = {"logging_level": logging.WARNING}
    if address is None:
        # An instance of our own: no dashboard, and no warnings addressed to a cluster's operator.
        options.update(include_dashboard=False, logging_level=logging.ERROR)
    try:
        ray.init(address=address or "local", **options)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        if address is None:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot connect to Ray at {address}: {first}") from None
    try:
        yield ray, f"the Ray cluster at {address}" if address else "a local Ray instance"
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds on an address nothing listens at: ``ray.init`` itself retries for minutes."""
    import socket
    from urllib.parse import urlsplit

    host_port = urlsplit(address).netloc if "://" in address else address
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot connect to Ray at {address}: {exc.strerror or exc} (is `ray start --head` "
                        f"running there?)") from None


def pool_size(ray, actors: int | None, threads_per_actor: int, local: bool) -> tuple[int, float]:
    """(actors, the cluster's CPUs). By default as many actors as the CPUs hold; more than the CPUs hold
    is refused on a local instance (they would wait forever) and only warned about on a cluster, whose
    autoscaler may add nodes."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if actors is None:
        actors = max(1, int(cpus // threads_per_actor))
    needed = actors * threads_per_actor
    if needed > cpus:
        message = (f"{actors} actor(s) x --threads-per-actor {threads_per_actor} need {needed} CPUs; "
                   f"{'the local Ray instance' if local else 'the Ray cluster'} has {cpus:g}")
        if local:
            raise UserError(message)
        import click

        click.echo(f"warning: {message} now; the job waits until the cluster has them", err=True)
    return actors, cpus


def _read_block(spec: InputSpec, shard: Shard):
    import pyarrow as pa

    texts, errors = read_shard(spec, shard)
    return [pa.table({"shard": pa.array([shard.index] * shard.rows, pa.int64()),
                      "id": pa.array(shard.ids, pa.int64()),
                      "text": pa.array(texts, pa.string()),
                      "error": pa.array(errors, pa.string())})]


def _datasource(spec: InputSpec, shards: list[Shard]):
    """A Ray Data Datasource with one read task per shard (defined here: it subclasses a ray class)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    def size(shard: Shard) -> int:
        return shard.end - shard.start if spec.fmt != "parquet" else shard.rows * 100

    class CorpusShards(Datasource):
        def get_name(self) -> str:
            return "CorpusShards"

        def estimate_inmemory_data_size(self) -> int:
            return sum(size(shard) for shard in shards)

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [ReadTask(functools.partial(_read_block, spec, shard),
                             BlockMetadata(num_rows=shard.rows, size_bytes=size(shard), input_files=[spec.path],
                                           exec_stats=None))
                    for shard in shards]

    return CorpusShards()


def _one_line(text: str) -> str:
    """Keep one output line per row even if a model emits a line break."""
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


class ShardTranslator:
    """One actor of the pool: a Translator built in this process, used for every batch it is given.
    Malformed rows (an error set) are not translated: they give an empty translation."""

    def __init__(self, bundle: str, engine: str, precision: str, threads: int, options: dict):
        from mtedge.translator import Translator

        # the shortlist is the Translator's, the rest are translate()'s options
        self.options = {k: v for k, v in options.items() if k != SHORTLIST_OPTION}
        self.failure = None
        try:
            self.translator = Translator(bundle, engine=engine, precision=precision, device="cpu",
                                         threads=threads, shortlist=options.get(SHORTLIST_OPTION, False))
        except UserError as exc:
            # Raised here, the actor would die and Ray keep only a traceback's text (and retry); raised
            # from the first batch, the driver gets the UserError itself and prints its one line.
            self.failure = exc

    def __call__(self, batch):
        import pyarrow as pa

        if self.failure is not None:
            raise self.failure
        texts = batch.column("text").to_pylist()
        errors = batch.column("error").to_pylist()
        todo = ["" if error is not None else text for text, error in zip(texts, errors)]
        translations = [_one_line(t.text) for t in self.translator.translate(todo, **self.options)]
        return pa.table({"shard": batch.column("shard"), "id": batch.column("id"),
                         "translation": pa.array(translations, pa.string()), "error": batch.column("error")})


class _Collector:
    """Gathers rows by shard; a shard is handed on (sorted by id) as soon as all its rows are back."""

    def __init__(self, shards: list[Shard], on_shard: Callable):
        self.shards = {shard.index: shard for shard in shards}
        self.rows: dict[int, list] = defaultdict(list)
        self.on_shard = on_shard

    def add(self, table) -> int:
        columns = [table.column(name).to_pylist() for name in ("shard", "id", "translation", "error")]
        for index, row_id, translation, error in zip(*columns):
            if index not in self.shards:
                raise RuntimeError(f"row {row_id} of shard {index}, which was not asked for or is already written")
            rows = self.rows[index]
            rows.append((row_id, translation, error))
            if len(rows) == self.shards[index].rows:
                rows.sort(key=lambda row: row[0])
                self.on_shard(self.shards.pop(index), [r[0] for r in rows], [r[1] for r in rows],
                              [r[2] for r in rows])
                del self.rows[index]
        return len(columns[0])

    def finish(self) -> None:
        if self.shards:
            missing = sum(s.rows for s in self.shards.values()) - sum(len(r) for r in self.rows.values())
            raise RuntimeError(f"Ray Data returned {missing} row(s) too few; shards "
                               f"{sorted(self.shards)[:5]} are incomplete")


def translate_shards(ray, spec: InputSpec, shards: list[Shard], *, bundle: str, engine: str, precision: str,
                     options: dict, actors: int, threads_per_actor: int, batch_size: int,
                     on_shard: Callable, on_rows: Callable[[int], None] | None = None) -> None:
    """Translate ``shards``; ``on_shard(shard, ids, translations, errors)`` for each as it completes."""
    config = {"bundle": bundle, "engine": engine, "precision": precision, "options": options, "actors": actors,
              "threads_per_actor": threads_per_actor, "batch_size": batch_size}
    source = _client_batches if _is_ray_client() else _local_batches
    collector = _Collector(shards, on_shard)
    batches = source(ray, spec, shards, config)
    try:
        for batch in batches:
            count = collector.add(batch)
            if on_rows is not None:
                on_rows(count)
    except Exception as exc:
        user = _user_error(exc)
        if user is None:
            raise
        raise type(user)(f"on a Ray worker: {user}") from None
    finally:
        batches.close()  # stops the pipeline at once when the driver fails or is interrupted
    collector.finish()


def _dataset(ray, spec: InputSpec, shards: list[Shard], bundle, engine, precision, options, actors,
             threads_per_actor, batch_size):
    # Reads take no CPU, so only this cap keeps them from running (and spawning workers) all at once; it
    # also bounds the shards in flight, which is what a killed run can lose.
    dataset = ray.data.read_datasource(_datasource(spec, shards), override_num_blocks=len(shards), num_cpus=0,
                                       compute=ray.data.TaskPoolStrategy(size=actors + 1))
    return dataset.map_batches(
        ShardTranslator, batch_size=batch_size, batch_format="pyarrow",
        fn_constructor_kwargs={"bundle": bundle, "engine": engine, "precision": precision,
                               "threads": threads_per_actor, "options": options},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads_per_actor)


# Ray Data's settings for our runs: no bars of its own (the command draws one, over rows written), no
# start-up banner, and a UDF's exception raised as itself (our UserError), not as a bare "UDF failed".
_DATA_SETTINGS = {"enable_progress_bars": False, "print_on_execution_start": False,
                  "raise_original_map_exception": True}


@contextlib.contextmanager
def _data_settings(ray):
    """``_DATA_SETTINGS`` and a quiet ``ray.data`` logger for the duration (the process may use Ray Data
    for other things too)."""
    from ray.util import log_once

    context = ray.data.DataContext.get_current()
    previous = {name: getattr(context, name) for name in _DATA_SETTINGS}
    for name, value in _DATA_SETTINGS.items():
        setattr(context, name, value)
    log_once("ray_data_progress_manager_disabled")  # spend the once-only "progress bars disabled" warning
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.WARNING)  # not Ray Data's INFO lines on the console: the report says it all
    try:
        yield
    finally:
        data_logger.setLevel(level)
        for name, value in previous.items():
            setattr(context, name, value)


def _local_batches(ray, spec, shards, config):
    """The pipeline run by this process, Ray Data's usual way."""
    with _data_settings(ray):
        yield from _dataset(ray, spec, shards, **config).iter_batches(batch_size=None, batch_format="pyarrow")


def _is_ray_client() -> bool:
    from ray.util.client import ray as client

    return client.is_connected()


class PipelineDriver:
    """The pipeline run inside the cluster, its batches handed out one call at a time. For Ray Client
    (``ray://``) connections: Ray Data's executor cannot run in a client process (ray 2.60: it needs the
    core worker a client does not have), but the client can call an actor."""

    def __init__(self, spec: InputSpec, shards: list[Shard], config: dict):
        import ray

        self.settings = _data_settings(ray)
        self.settings.__enter__()
        self.batches = iter(_dataset(ray, spec, shards, **config).iter_batches(batch_size=None,
                                                                               batch_format="pyarrow"))

    def next(self):
        return next(self.batches, None)


def _client_batches(ray, spec, shards, config):
    driver = ray.remote(num_cpus=0)(PipelineDriver).remote(spec, shards, config)
    try:
        while (batch := ray.get(driver.next.remote())) is not None:
            yield batch
    finally:
        ray.kill(driver)


def _user_error(exc: BaseException) -> UserError | None:
    """The UserError a Ray task or actor raised, however Ray wrapped it (a RayTaskError keeps the
    original in ``.cause``; its own text is a whole remote traceback)."""
    seen = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException):
            pending.append(cause)
            continue
        if isinstance(current, UserError) and type(current).__module__.startswith("mtedge"):
            return current
        pending += [current.__cause__, current.__context__]
    return None
