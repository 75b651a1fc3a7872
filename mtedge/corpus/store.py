"""The shard directory of a corpus run: numbered shard files and the manifest that vouches for them.

    OUTPUT.shards/manifest.json      settings of the run + one record per finished shard
    OUTPUT.shards/shard-00000.jsonl  {"id": row, "translation": ..., "error": null | message} per row

A shard file is written to a temporary name and renamed, then recorded in the manifest (itself
replaced atomically), so a run killed at any moment leaves only whole, recorded shards — or a whole
shard not yet recorded, which the next run redoes. A shard is reused only when its record matches the
scan (first row, row count, input hash) and its file still has the recorded sha256 and row count.
The manifest's settings (bundle, engine, precision, decoding, input format and field, shard size)
must match the new run's, or the directory is refused: translations of two setups must not mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from mtedge.corpus.source import Shard
from mtedge.errors import UserError

FORMAT = "mtedge-corpus-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OUTPUT_FORMATS = ("text", "jsonl", "parquet")


def detect_output_format(path: Path) -> str:
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(Path(path).suffix.lower(), "text")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class ShardStore:
    """Open with :meth:`open`; ``check`` / ``write`` one shard; ``assemble`` the output."""

    def __init__(self, directory: Path, manifest: dict):
        self.directory = directory
        self.manifest = manifest

    @classmethod
    def open(cls, directory: Path, settings: dict, restart: bool = False) -> "ShardStore":
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if directory.exists() and not directory.is_dir():
            raise UserError(f"shard directory {directory} is a file; choose another --shards-dir")
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                manifest = None
                reason = f"its {MANIFEST} is unreadable ({exc})"
            else:
                reason = None if isinstance(manifest, dict) and manifest.get("format") == FORMAT else \
                    f"its {MANIFEST} is not a corpus shard manifest"
            if reason is not None and not restart:
                raise UserError(f"cannot resume from {directory}: {reason}; pass --restart to start over")
            if reason is None and not restart:
                difference = _difference(manifest.get("settings") or {}, settings)
                if difference:
                    raise UserError(f"{directory} holds shards of another setup ({difference}); pass --restart "
                                    f"to discard them, or choose another --shards-dir")
                return cls(directory, manifest)
            cls._clear(directory)
        elif directory.is_dir() and any(directory.iterdir()):
            raise UserError(f"{directory} exists and is not a shard directory (no {MANIFEST}); "
                            f"choose another --shards-dir")
        # Created with the first shard, so that a run that fails before (no Ray, a cluster that does not
        # answer) leaves nothing behind; but a directory that could not be created is named now.
        parent = next(p for p in [directory, *directory.parents] if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot create the shard directory {directory}: {parent} is not a writable directory")
        return cls(directory, {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings,
                               "shards": {}})

    @staticmethod
    def _clear(directory: Path) -> None:
        """Remove what a run writes here (only that: the directory may hold the user's own files)."""
        for path in directory.iterdir():
            name = path.name
            if path.is_file() and (name == MANIFEST or (name.startswith("shard-") and name.endswith(".jsonl"))
                                   or (name.startswith(".") and name.endswith(".partial"))):
                path.unlink()

    # -- one shard ---------------------------------------------------------------------------------
    def check(self, shard: Shard) -> str | None:
        """None when the shard is done and verified; otherwise why it must be (re)done. A record that
        does not verify is dropped, so the manifest never vouches for a bad file."""
        record = self.manifest["shards"].get(shard.name)
        if record is None:
            return "not done"
        reason = None
        if (record.get("first_row"), record.get("rows")) != (shard.first_row, shard.rows) \
                or record.get("input_sha256") != shard.input_sha256:
            reason = "its input changed"
        else:
            try:
                data = (self.directory / f"{shard.name}.jsonl").read_bytes()
            except OSError:
                reason = "its file is missing"
            else:
                if _sha256(data) != record.get("sha256") or data.count(b"\n") != shard.rows:
                    reason = "its file does not match its recorded hash"
        if reason is not None:
            del self.manifest["shards"][shard.name]
            self._save()
        return reason

    def write(self, shard: Shard, ids: list[int], translations: list[str], errors: list[str | None]) -> None:
        if list(ids) != list(shard.ids):  # every row once, in order: anything else is a bug, not a user error
            raise RuntimeError(f"{shard.name}: got rows {ids[:3]}…, expected {shard.first_row}.."
                               f"{shard.first_row + shard.rows - 1}")
        data = "".join(json.dumps({"id": i, "translation": t, "error": e}, ensure_ascii=False) + "\n"
                       for i, t, e in zip(ids, translations, errors)).encode("utf-8")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.directory / f"{shard.name}.jsonl", data)
        except OSError as exc:
            raise UserError(f"cannot write {self.directory / shard.name}.jsonl: {exc.strerror or exc}") from None
        self.manifest["shards"][shard.name] = {
            "file": f"{shard.name}.jsonl", "first_row": shard.first_row, "rows": shard.rows,
            "input_sha256": shard.input_sha256, "sha256": _sha256(data),
            "malformed": sum(e is not None for e in errors)}
        self._save()

    def _save(self) -> None:
        data = (json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            _write_atomically(self.directory / MANIFEST, data)
        except OSError as exc:
            raise UserError(f"cannot write {self.directory / MANIFEST}: {exc.strerror or exc}") from None

    def rows(self, shard: Shard) -> list[dict]:
        """The rows of a finished shard, checked against its recorded hash once more."""
        data = (self.directory / f"{shard.name}.jsonl").read_bytes()
        if _sha256(data) != self.manifest["shards"].get(shard.name, {}).get("sha256"):
            raise UserError(f"{self.directory / shard.name}.jsonl changed while the output was written; run again")
        return [json.loads(line) for line in data.decode("utf-8").splitlines()]

    # -- the output --------------------------------------------------------------------------------
    def assemble(self, shards: list[Shard], output: Path, fmt: str) -> None:
        """Write ``output`` from the shards in row order: to a temporary file beside it, renamed over it
        only when complete (a failed run leaves an existing file as it was)."""
        target = Path(os.path.realpath(output))
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        except OSError as exc:
            raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
        os.close(fd)
        try:
            if fmt == "parquet":
                self._write_parquet(shards, temp)
            else:
                with open(temp, "w", encoding="utf-8", newline="\n") as handle:
                    for shard in shards:
                        for row in self.rows(shard):
                            if fmt == "jsonl":
                                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                            else:
                                handle.write(row["translation"] + "\n")
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
            os.chmod(temp, mode)
            os.replace(temp, target)
        except OSError as exc:
            raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
        finally:
            Path(temp).unlink(missing_ok=True)

    def _write_parquet(self, shards: list[Shard], path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.int64()), ("translation", pa.string()), ("error", pa.string())])
        with pq.ParquetWriter(path, schema) as writer:
            for shard in shards:
                rows = self.rows(shard)
                writer.write_table(pa.table({key: [row[key] for row in rows] for key in schema.names},
                                            schema=schema))

    def remove(self) -> None:
        """Delete the shards and the manifest (after a successful run), and the directory if now empty."""
        if not self.directory.is_dir():
            return  # nothing was translated (an empty input)
        self._clear(self.directory)
        try:
            self.directory.rmdir()
        except OSError:
            pass  # the user's own files are there


def _difference(old: dict, new: dict) -> str | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} now"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
