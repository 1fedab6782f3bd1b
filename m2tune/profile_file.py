"""The tuned-config file `profiles/<gpu-slug>/<kernel>.json`: its schema, reading and writing.

    {"schema": 1, "kernel": "m2rnn_fwd",
     "gpu": {"name": "NVIDIA H200", "slug": "nvidia-h200", "capability": "9.0"},
     "versions": {"triton": "3.6.0", "torch": "2.11.0+cu130", "m2tune": "0.1.0"},
     "variant_hash": "<sha256/16 of the template source>",
     "entries": [{"bucket": {"B": 4, "S": 4096, "K": 64, "V": 16, "Nq": 1, ..., "dtype": "bfloat16"},
                  "name": "paper-7b", "config": {...}, "measured": true,
                  "time_ms": 2.516, "spread": 0.001, "default_ms": 26.04, "trials": 100,
                  "study": "m2rnn_fwd/paper-7b/nvidia-h200/gpu",
                  "resources": {"n_regs": 78, "shared": 1024, ...}}, ...]}

`measured: false` marks configs scored by the performance model only. A forward entry whose config
rounds the state (dot_bf16, dot_tf32) may also hold `"training": {"config": ..., "time_ms": ...}`: the
same study's fastest config that keeps the checkpointed state accurate, used when gradients are
taken. Entries are sorted by bucket, keys sorted, two-space indents: re-exporting the same studies gives the same bytes, and a
new bucket is a small diff. Reading never imports optuna, pandas or plotly (the runtime reads).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

SCHEMA = 1
BUCKET_FIELDS = ("B", "S", "K", "V", "Nq", "Nk", "Nv", "Nw", "Nf", "dtype")


class ProfileFileError(ValueError):
    """A tuned-config file that cannot be used: unreadable, another schema, malformed."""


@dataclass(frozen=True)
class Entry:
    bucket: dict[str, Any]
    name: str
    config: dict[str, Any]
    measured: bool
    time_ms: float
    raw: dict[str, Any]            # everything else the file says (spread, default, trials, ...)

    def problem(self):
        from .problem import Problem
        return Problem(**self.bucket)


@dataclass(frozen=True)
class ProfileFile:
    path: str
    kernel: str
    gpu: dict[str, Any]
    versions: dict[str, str]
    variant_hash: str
    entries: tuple[Entry, ...]


def bucket_of(problem) -> dict[str, Any]:
    return {k: getattr(problem, k) for k in BUCKET_FIELDS}


def _bucket_key(bucket: Mapping[str, Any]) -> tuple:
    return tuple(str(bucket[k]) if k == "dtype" else int(bucket[k]) for k in BUCKET_FIELDS)


def dumps(kernel: str, gpu: Mapping[str, Any], versions: Mapping[str, str], variant_hash: str,
          entries: list[dict[str, Any]]) -> str:
    entries = sorted(entries, key=lambda e: _bucket_key(e["bucket"]))
    doc = {"schema": SCHEMA, "kernel": kernel, "gpu": dict(gpu), "versions": dict(versions),
           "variant_hash": variant_hash, "entries": entries}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ProfileFileError(f"{where}: missing {key!r}")
    if not isinstance(data[key], kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ProfileFileError(f"{where}: {key!r} should be {want}, got {type(data[key]).__name__}")
    return data[key]


def load(path: Path) -> ProfileFile:
    """Parse and check one file; ProfileFileError says what is wrong with it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileFileError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProfileFileError(f"{path}: expected a JSON object")
    if data.get("schema") != SCHEMA:
        raise ProfileFileError(f"{path}: schema {data.get('schema')!r}, this m2tune reads schema {SCHEMA}")
    where = str(path)
    entries = []
    for i, raw in enumerate(_need(data, "entries", list, where)):
        at = f"{where}: entries[{i}]"
        if not isinstance(raw, dict):
            raise ProfileFileError(f"{at}: expected an object")
        bucket = _need(raw, "bucket", dict, at)
        missing = [k for k in BUCKET_FIELDS if k not in bucket]
        if missing:
            raise ProfileFileError(f"{at}: bucket lacks {missing}")
        try:
            _bucket_key(bucket)
        except (TypeError, ValueError):
            raise ProfileFileError(f"{at}: bucket fields must be integers (dtype a string)") from None
        time_ms = _need(raw, "time_ms", (int, float), at)
        entries.append(Entry(bucket=bucket, name=str(raw.get("name", "")),
                             config=_need(raw, "config", dict, at), measured=bool(_need(raw, "measured", bool, at)),
                             time_ms=float(time_ms), raw=raw))
    return ProfileFile(path=where, kernel=_need(data, "kernel", str, where), gpu=_need(data, "gpu", dict, where),
                       versions=_need(data, "versions", dict, where),
                       variant_hash=_need(data, "variant_hash", str, where), entries=tuple(entries))
