"""An exported model bundle: a directory with ``manifest.json``, ``tokenizer/`` and one directory
per engine+precision (format documented in ``export/README.md``).

The runtime reads bundles only through :class:`Bundle`; it checks that every file the manifest lists
for what is being loaded exists with its recorded size, so that a deleted or truncated file is named
instead of surfacing later as an obscure ONNX Runtime / CTranslate2 error. No heavy imports here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mtedge.errors import BundleError

FORMAT = "mtedge-bundle"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
# A vocabulary shortlist (mtedge/convert/shortlist.py), in CTranslate2's format and place: its model directory
SHORTLIST_FILE = "vmap.txt"

# Precision names per engine, in the order they are listed to users.
PRECISIONS = {
    # int8_latency: int8's weights with the decoder written for one sentence at a time (mtedge/convert/rowwise_int8.py)
    # int4: 4-bit weights in blocks, both graphs for one sentence at a time, ~60% of int8's files
    "onnx": ("fp32", "int8", "int8_latency", "int4", "fp16"),
    "ct2": ("float32", "int8", "int8_float32", "int16", "float16", "int8_float16", "bfloat16"),
    "torch": ("fp32",),
}
# Precisions that only run on a CUDA device.
GPU_PRECISIONS = {"onnx": {"fp16"}, "ct2": {"float16", "int8_float16", "bfloat16"}, "torch": set()}


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path) -> dict[str, dict]:
    """``{relative path: {"size", "sha256"}}`` for every regular file under ``directory``."""
    directory = Path(directory)
    records = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        records[path.relative_to(directory).as_posix()] = {
            "size": path.stat().st_size, "sha256": sha256_file(path)}
    return records


def write_manifest(bundle: Path, manifest: dict) -> None:
    """``manifest.json`` of the bundle directory ``bundle``, replaced whole (a crash leaves the old one)."""
    path = Path(bundle) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def check_files(directory: Path, files: dict[str, dict], deep: bool = False) -> list[str]:
    """Problems with ``files`` (as written by :func:`describe_files`) under ``directory``."""
    problems = []
    for name, record in files.items():
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"missing file {path}")
            continue
        size = path.stat().st_size
        if size != record.get("size"):
            problems.append(f"wrong size for {path}: {size} bytes, manifest says {record.get('size')} "
                            f"(truncated or replaced?)")
        elif deep and record.get("sha256") and sha256_file(path) != record["sha256"]:
            problems.append(f"checksum mismatch for {path} (file was modified or corrupted)")
    return problems


def corrupt_file(path: Path, bundle: Path, detail: str = "") -> BundleError:
    """The one-line error for a bundle file that is present (right size) but cannot be parsed."""
    detail = " ".join(str(detail).split())
    detail = detail if len(detail) <= 100 else detail[:97] + "..."
    why = f" ({detail})" if detail else ""
    return BundleError(f"{path} is corrupt{why}; run `mtedge info --deep {bundle}` to check the bundle's files")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_id_list(value) -> bool:
    return isinstance(value, list) and all(_is_int(i) for i in value)


# generation fields the runtime reads: (check, what it must be); None is always allowed (HF: unset)
_GENERATION_FIELDS = {
    "num_beams": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "max_new_tokens": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "max_length": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "length_penalty": (_is_number, "a number"),
    "early_stopping": (lambda v: v in (True, False, "never"), "true, false or \"never\""),
    "repetition_penalty": (_is_number, "a number"),
    "no_repeat_ngram_size": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "forced_eos_token_id": (lambda v: _is_int(v) or _is_id_list(v), "a token id or a list of them"),
    "renormalize_logits": (lambda v: isinstance(v, bool), "true or false"),
    "bad_words_ids": (lambda v: isinstance(v, list) and all(_is_id_list(w) for w in v), "a list of id lists"),
}


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_files_record(files, where: str) -> str | None:
    if not isinstance(files, dict):
        return f"{where}.files must be an object of file name -> {{size, sha256}}, got {_shown(files)}"
    for name, record in files.items():
        if not isinstance(record, dict):
            return f"{where}.files[{name!r}] must be an object, got {_shown(record)}"
        if not _is_int(record.get("size")) or record["size"] < 0:
            return f"{where}.files[{name!r}].size must be a byte count, got {_shown(record.get('size'))}"
        if record.get("sha256") is not None and not isinstance(record["sha256"], str):
            return f"{where}.files[{name!r}].sha256 must be a string, got {_shown(record['sha256'])}"
    return None


def manifest_problem(manifest: dict) -> str | None:
    """The first field of ``manifest`` whose type the runtime cannot use, described; ``None`` when fine."""
    for key in ("family", "name", "source_lang", "target_lang"):
        value = manifest.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be a string, got {_shown(value)}"
    if not isinstance(manifest.get("family"), str):
        return f"family must be a string, got {_shown(manifest.get('family'))}"
    tokenizer = manifest["tokenizer"]
    if not isinstance(tokenizer, dict):
        return f"tokenizer must be an object with dir and files, got {_shown(tokenizer)}"
    if not isinstance(tokenizer.get("dir", "tokenizer"), str):
        return f"tokenizer.dir must be a string, got {_shown(tokenizer['dir'])}"
    if (problem := _check_files_record(tokenizer.get("files", {}), "tokenizer")) is not None:
        return problem
    engines = manifest["engines"]
    if not isinstance(engines, dict):
        return f"engines must be an object of engine -> precision -> record, got {_shown(engines)}"
    for engine, precisions in engines.items():
        if not isinstance(precisions, dict):
            return f"engines.{engine} must be an object of precision -> record, got {_shown(precisions)}"
        for precision, record in precisions.items():
            where = f"engines.{engine}.{precision}"
            if not isinstance(record, dict):
                return f"{where} must be an object with dir and files, got {_shown(record)}"
            if not isinstance(record.get("dir"), str):
                return f"{where}.dir must be a string, got {_shown(record.get('dir'))}"
            if (problem := _check_files_record(record.get("files", {}), where)) is not None:
                return problem
            if record.get("validation") is not None and not isinstance(record["validation"], dict):
                return f"{where}.validation must be an object, got {_shown(record['validation'])}"
    generation = manifest.get("generation")
    if generation is not None and not isinstance(generation, dict):
        return f"generation must be an object, got {_shown(generation)}"
    for key, (check, what) in _GENERATION_FIELDS.items():
        value = (generation or {}).get(key)
        if value is not None and not check(value):
            return f"generation.{key} must be {what}, got {_shown(value)}"
    for key in ("model_shape", "export", "source_model", "validation_reference", "shortlist"):
        value = manifest.get(key)
        if value is not None and not isinstance(value, dict):
            return f"{key} must be an object, got {_shown(value)}"
    shape = manifest.get("model_shape") or {}
    for key, value in shape.items():
        if value is not None and not (_is_int(value) and value >= 0):
            return f"model_shape.{key} must be a non-negative integer, got {_shown(value)}"
    return None


# HF's GenerationConfig counts max_length with the decoder-start token; a record that sets neither
# max_new_tokens nor max_length gets this limit (generated tokens incl. </s> = DEFAULT_MAX_LENGTH - 1).
DEFAULT_MAX_LENGTH = 256


@dataclass(frozen=True)
class GenerationSettings:
    """The manifest's ``generation`` record, parsed once: what every engine, the Translator and the bench
    read as defaults. ``max_length`` counts generated target tokens incl. ``</s>`` (HF ``max_new_tokens``);
    ``None`` in the record means "unset" and gets HF's default."""

    num_beams: int = 1
    max_length: int = DEFAULT_MAX_LENGTH - 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    forced_eos_token_id: int | None = None   # HF allows a list; generation ends on its first id
    renormalize_logits: bool = False
    forced_bos_token_id: int | None = None
    record: dict | None = None               # the raw record, for display and re-export

    @classmethod
    def from_record(cls, record: dict | None) -> "GenerationSettings":
        """Types are checked by :func:`manifest_problem` when a bundle is opened."""
        record = dict(record or {})
        value = lambda key, default: default if record.get(key) is None else record[key]  # noqa: E731
        forced_eos = record.get("forced_eos_token_id")
        if isinstance(forced_eos, list):
            forced_eos = forced_eos[0] if forced_eos else None
        max_length = record.get("max_new_tokens") or max(1, int(value("max_length", DEFAULT_MAX_LENGTH)) - 1)
        return cls(num_beams=int(value("num_beams", 1)), max_length=int(max_length),
                   length_penalty=float(value("length_penalty", 1.0)),
                   early_stopping=value("early_stopping", False),
                   repetition_penalty=float(value("repetition_penalty", 1.0)),
                   no_repeat_ngram_size=int(value("no_repeat_ngram_size", 0)),
                   forced_eos_token_id=forced_eos, renormalize_logits=bool(value("renormalize_logits", False)),
                   forced_bos_token_id=record.get("forced_bos_token_id"), record=record)

    @property
    def forces_eos(self) -> bool:
        """Whether ``</s>`` is forced at the length limit (Marian's ``forced_eos_token_id``)."""
        return self.forced_eos_token_id is not None

    def unsupported_by_searches(self) -> list[str]:
        """HF logits processors set here that mtedge's own searches do not implement."""
        ignored = []
        if self.repetition_penalty != 1.0:
            ignored.append(f"repetition_penalty={self.repetition_penalty}")
        if self.no_repeat_ngram_size:
            ignored.append(f"no_repeat_ngram_size={self.no_repeat_ngram_size}")
        return ignored


def check_manifest(manifest: dict, manifest_path: Path) -> None:
    """Raise a one-line :class:`BundleError` naming the first field of the wrong type."""
    problem = manifest_problem(manifest)
    if problem is not None:
        raise BundleError(f"{manifest_path} is damaged: {problem} (re-export the bundle)")


def format_engines(engines: dict[str, list[str]]) -> str:
    return "; ".join(f"{engine}: {', '.join(precs)}" for engine, precs in engines.items()) or "nothing"


class Bundle:
    """A model bundle on disk. Open with :meth:`Bundle.open`."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "Bundle":
        path = Path(path)
        if not path.exists():
            raise BundleError(f"bundle not found: {path}")
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            hint = " (it looks like a Hugging Face checkpoint; export it with `mtedge export`)" \
                if (path / "config.json").is_file() else ""
            raise BundleError(f"{path} is not an mtedge bundle: no {MANIFEST_NAME}{hint}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"{manifest_path} is not an mtedge bundle manifest (format must be {FORMAT!r})")
        version = manifest.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_FORMAT_VERSIONS)
            raise BundleError(
                f"{manifest_path} has bundle format version {version!r}; this mtedge reads version(s) "
                f"{supported} — re-export the model with this mtedge, or upgrade mtedge")
        for key in ("family", "engines", "tokenizer"):
            if key not in manifest:
                raise BundleError(f"{manifest_path} lacks the required field {key!r}")
        check_manifest(manifest, manifest_path)
        return cls(path, manifest)

    @staticmethod
    def is_bundle_dir(path: str | Path) -> bool:
        """Whether ``path`` looks like a bundle (has a manifest); :meth:`open` checks the rest."""
        return (Path(path) / MANIFEST_NAME).is_file()

    # -- what it holds -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def source_lang(self) -> str | None:
        return self.manifest.get("source_lang")

    @property
    def target_lang(self) -> str | None:
        return self.manifest.get("target_lang")

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings.from_record(self.manifest.get("generation"))

    @property
    def model_shape(self) -> dict:
        return dict(self.manifest.get("model_shape") or {})

    def engines(self) -> dict[str, list[str]]:
        out = {}
        for engine, precisions in self.manifest["engines"].items():
            order = PRECISIONS.get(engine, ())
            out[engine] = sorted(precisions, key=lambda p: (order.index(p) if p in order else len(order), p))
        return out

    def engine_record(self, engine: str, precision: str) -> dict:
        record = self.manifest["engines"].get(engine, {}).get(precision)
        if record is None:
            raise BundleError(f"bundle {self.name} has no {engine} {precision}; it has "
                              f"{format_engines(self.engines())}")
        return record

    def has_shortlist(self, engine: str, precision: str) -> bool:
        """Whether that engine directory holds a vocabulary shortlist (``mtedge shortlist``)."""
        return SHORTLIST_FILE in self.engine_record(engine, precision).get("files", {})

    def engine_dir(self, engine: str, precision: str) -> Path:
        """The directory of one engine+precision, after checking its files (names a broken one)."""
        record = self.engine_record(engine, precision)
        directory = self.path / record["dir"]
        self._raise_on(check_files(directory, record.get("files", {})))
        return directory

    def tokenizer_dir(self) -> Path:
        record = self.manifest["tokenizer"]
        directory = self.path / record.get("dir", "tokenizer")
        self._raise_on(check_files(directory, record.get("files", {})))
        return directory

    def verify(self, deep: bool = False) -> list[str]:
        """Every problem found with the bundle's files (``deep``: compare sha256 too)."""
        record = self.manifest["tokenizer"]
        problems = check_files(self.path / record.get("dir", "tokenizer"), record.get("files", {}), deep)
        for engine, precisions in self.manifest["engines"].items():
            for precision, rec in precisions.items():
                problems += check_files(self.path / rec["dir"], rec.get("files", {}), deep)
        return problems

    def size_bytes(self, engine: str, precision: str) -> int:
        record = self.engine_record(engine, precision)
        return sum(f["size"] for f in record.get("files", {}).values())

    def _raise_on(self, problems: list[str]) -> None:
        if problems:
            more = f" (and {len(problems) - 1} more problem(s); run `mtedge info {self.path}`)" \
                if len(problems) > 1 else ""
            raise BundleError(f"bundle {self.name} is broken: {problems[0]}{more}")

    @classmethod
    def holding(cls, engine_dir: str | Path) -> "Bundle":
        """The bundle an engine directory (``<bundle>/<engine>/<precision>/``) belongs to."""
        return cls.open(Path(engine_dir).parent.parent)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, family={self.family!r}, engines={self.engines()})"
