"""An exported model bundle: a directory with ``manifest.json``, ``tokenizer/`` and one directory
per engine+precision (format documented in ``export/README.md``).

The runtime reads bundles only through :class:`Bundle`; it checks that every file the manifest lists
for what is being loaded exists with its recorded size, so that a deleted or truncated file is named
instead of surfacing later as an obscure ONNX Runtime / CTranslate2 error. No heavy imports here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mtedge.errors import BundleError

FORMAT = "mtedge-bundle"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"

# Precision names per engine, in the order they are listed to users.
PRECISIONS = {
    "onnx": ("fp32", "int8", "fp16"),
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
        return cls(path, manifest)

    # -- what it holds -------------------------------------------------------------------------
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
    def generation(self) -> dict:
        return dict(self.manifest.get("generation") or {})

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

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, family={self.family!r}, engines={self.engines()})"
