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

`measured: false` marks configs scored by the performance model only. `validated` records the
validation plan an entry (and its training config) passed: {"plan": 2, "where": "gpu" or
"interpreter", "paths": ["chunks", "h0", "clip", "packed"], ...} (m2tune/coverage.py, measure/plan.py). A forward entry whose config
rounds the state (dot_bf16, dot_tf32) may also hold `"training": {"config": ..., "time_ms": ...}`: the
same study's fastest config that keeps the checkpointed state accurate, used when gradients are
taken. Entries are sorted by bucket, keys sorted, two-space indents: re-exporting the same studies gives the same bytes, and a
new bucket is a small diff. Reading never imports optuna, pandas or plotly (the runtime reads).
"""
from __future__ import annotations

import json
import math
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
    rejected: tuple[str, ...] = ()     # entries left out by load(strict=False), each with why


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


MAX_BYTES = 16 * 2 ** 20          # a tuned-config file is kilobytes; anything this large is not one
POSITIVE = ("B", "S", "K", "V", "Nq", "Nk", "Nv", "Nw", "Nf")


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ProfileFileError(f"{where}: missing {key!r}")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise ProfileFileError(f"{where}: {key!r} should be {want}, got {type(value).__name__} {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a profile file may hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float")
    return value


def parse(text: str, where: str) -> Any:
    """JSON with the limits a profile file keeps: its size, no NaN or infinities, bounded nesting."""
    if len(text) > MAX_BYTES:
        raise ProfileFileError(f"{where}: {len(text)} bytes, more than a profile file holds ({MAX_BYTES})")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ProfileFileError(f"{where}: nested too deeply to be a profile file") from None
    except ValueError as exc:             # JSONDecodeError is a ValueError, and so are the two above
        raise ProfileFileError(f"{where}: not readable JSON ({exc})") from None


def _bucket(raw: Mapping[str, Any], at: str) -> dict[str, Any]:
    bucket = _need(raw, "bucket", dict, at)
    missing = [k for k in BUCKET_FIELDS if k not in bucket]
    unknown = sorted(set(bucket) - set(BUCKET_FIELDS))
    if missing or unknown:
        raise ProfileFileError(f"{at}: bucket lacks {missing}" if missing else f"{at}: bucket has unknown {unknown}")
    for key in POSITIVE:
        value = _need(bucket, key, int, f"{at}: bucket")
        if value < 1 or value > 2 ** 31:
            raise ProfileFileError(f"{at}: bucket {key}={value} is not a positive size")
    from .problem import Problem
    try:
        Problem(**bucket)                 # dtype known, head counts dividing the largest
    except (TypeError, ValueError) as exc:
        raise ProfileFileError(f"{at}: bucket {exc}") from None
    return dict(bucket)


def _config(config: Any, kernel: str, at: str) -> dict[str, Any]:
    """Parameter names and values the kernel's spec allows (the rest take its defaults)."""
    if not isinstance(config, dict):
        raise ProfileFileError(f"{at}: should be an object of parameters, got {type(config).__name__}")
    from .problem import member
    try:
        from . import variants
        allowed = variants.spec(kernel).PARAMS
    except (KeyError, ImportError, AttributeError):
        raise ProfileFileError(f"{at}: unknown kernel {kernel!r}") from None
    for name, value in config.items():
        if name not in allowed:
            raise ProfileFileError(f"{at}: unknown parameter {name!r} of {kernel} (known: {', '.join(allowed)})")
        if not member(value, allowed[name]):
            raise ProfileFileError(f"{at}: {name}={_short(value)} not in {list(allowed[name])}")
    return dict(config)


def _number(raw: Mapping[str, Any], key: str, at: str) -> float:
    value = _need(raw, key, (int, float), at)
    if not (0 < value < 1e300 and math.isfinite(value)):
        raise ProfileFileError(f"{at}: {key}={_short(value)} is not a positive time")
    return float(value)


def _validated(raw: Mapping[str, Any], at: str) -> None:
    """The `validated` record (measure/plan.py Plan.record), when there is one: what the runtime
    reads of it (plan version, paths covered, a failure) has the right types."""
    from .coverage import PATHS
    record = raw.get("validated")
    if record is None:
        return
    if not isinstance(record, dict):
        raise ProfileFileError(f"{at}: validated should be an object, got {type(record).__name__}")
    plan = _need(record, "plan", int, f"{at}: validated")
    paths = _need(record, "paths", list, f"{at}: validated")
    unknown = [p for p in paths if p not in PATHS]
    if plan < 1 or unknown:
        raise ProfileFileError(f"{at}: validated plan={plan} paths {paths}: expected a positive plan "
                               f"and paths among {list(PATHS)}")
    if "failed" in record and not isinstance(record["failed"], str):
        raise ProfileFileError(f"{at}: validated.failed should be the reason, a string")


def _entry_configs(raw: Mapping[str, Any], kernel: str, at: str) -> dict[str, Any]:
    """The entry's config, and its training config and time when it has them, checked."""
    config = _config(_need(raw, "config", dict, at), kernel, f"{at}: config")
    _validated(raw, at)
    training = raw.get("training")
    if training is not None:
        if not isinstance(training, dict):
            raise ProfileFileError(f"{at}: training should be an object, got {type(training).__name__}")
        _config(_need(training, "config", dict, f"{at}: training"), kernel, f"{at}: training config")
        if "time_ms" in training:
            _number(training, "time_ms", f"{at}: training")
        _validated(training, f"{at}: training")
    return config


def load(path: Path, *, strict: bool = True) -> ProfileFile:
    """Parse and check one file (schema, types, sizes, the kernel's parameters); ProfileFileError
    says what is wrong with it. Never any other exception, whatever the bytes.

    strict=False (the runtime): an entry whose config names a parameter or value the kernel's
    spec does not know (a file from another m2tune, a hand edit) is left out, with why, in
    `rejected`, and the file's other entries stay usable; the file's structure is checked as ever.
    """
    path = Path(path)
    where = str(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ProfileFileError(f"{where}: larger than a profile file holds ({MAX_BYTES} bytes)")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileFileError(f"{where}: not readable ({exc})") from None
    data = parse(text, where)
    if not isinstance(data, dict):
        raise ProfileFileError(f"{where}: expected a JSON object")
    if data.get("schema") != SCHEMA or isinstance(data.get("schema"), bool):
        raise ProfileFileError(f"{where}: schema {_short(data.get('schema'))}, this m2tune reads schema {SCHEMA}")
    kernel = _need(data, "kernel", str, where)
    gpu = _need(data, "gpu", dict, where)
    versions = _need(data, "versions", dict, where)
    variant_hash = _need(data, "variant_hash", str, where)
    entries, seen, rejected = [], set(), []
    for i, raw in enumerate(_need(data, "entries", list, where)):
        at = f"{where}: entries[{i}]"
        if not isinstance(raw, dict):
            raise ProfileFileError(f"{at}: expected an object")
        bucket = _bucket(raw, at)
        key = _bucket_key(bucket)
        if key in seen:
            raise ProfileFileError(f"{at}: a second entry for the same bucket")
        seen.add(key)
        try:
            config = _entry_configs(raw, kernel, at)
        except ProfileFileError as exc:
            if strict:
                raise
            rejected.append(str(exc))
            continue
        name = raw.get("name", "")
        entries.append(Entry(bucket=bucket, name=name if isinstance(name, str) else str(name), config=config,
                             measured=_need(raw, "measured", bool, at), time_ms=_number(raw, "time_ms", at), raw=raw))
    return ProfileFile(path=where, kernel=kernel, gpu=gpu, versions=versions, variant_hash=variant_hash,
                       entries=tuple(entries), rejected=tuple(rejected))
