"""Corrupt tuned-config files never stop a training job: a seeded mutator over the shipped files.

Every mutation of profiles/nvidia-h200/m2rnn_{fwd,bwd}.json (a value replaced by a wrong type, a
non-positive size, an unknown parameter, a deleted or unknown key, NaN, 1e400, deep nesting, a
truncated or byte-flipped file, ...) is put first on the search path. The runtime's lookup must
answer with a Choice and `m2tune check`'s judgement with a line, never an exception; a file the
schema accepts must be one whose every entry the kernel's spec can read.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from m2tune import runtime
from m2tune.problem import shape
from m2tune.profile_file import ProfileFileError, load
from m2tune.tuning.check import check_file

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "profiles" / "nvidia-h200"
CASES = 300
BAD_VALUES = [0, -64, "64", None, [], {}, True, 1.5, "x" * 5000, 2 ** 70, -1e-9, "dot_bf16", {"a": [1, {"b": 2}]}]


def _paths(node, path=()):
    """Every (path, value) of a JSON document, containers included."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _set(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _delete(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def mutate(text: str, rng: random.Random) -> str:
    kind = rng.choice(["value", "value", "value", "delete", "add", "truncate", "bytes", "nest", "text", "dup"])
    if kind == "truncate":
        return text[:rng.randrange(len(text))]
    if kind == "bytes":
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return raw.decode("utf-8", errors="surrogateescape")
    if kind == "nest":
        depth = rng.choice([50, 5000, 100000])
        return "[" * depth + text + "]" * depth
    if kind == "text":                      # number spellings json.dumps never writes
        token = rng.choice(["1e400", "NaN", "-Infinity", "1" * 400])
        return text.replace('"time_ms": ', f'"time_ms": {token}, "was": ', 1)
    doc = json.loads(text)
    places = [p for p, _ in _paths(doc) if p]
    path = rng.choice(places)
    if kind == "value":
        _set(doc, path, rng.choice(BAD_VALUES))
    elif kind == "delete":
        _delete(doc, path)
    elif kind == "add":
        containers = [p for p, v in _paths(doc) if isinstance(v, dict)]
        target = rng.choice(containers)
        node = doc
        for key in target:
            node = node[key]
        node[rng.choice(["BLOCK_Q", "extra", "K", "MATMUL"])] = rng.choice(BAD_VALUES)
    elif kind == "dup":
        doc["entries"].append(json.loads(json.dumps(rng.choice(doc["entries"]))))
    return json.dumps(doc)


@pytest.mark.parametrize("kernel", ["m2rnn_fwd", "m2rnn_bwd"])
def test_no_corrupt_profile_file_raises(kernel, tmp_path, monkeypatch):
    rng = random.Random(f"fuzz-{kernel}")
    original = (SHIPPED / f"{kernel}.json").read_text()
    folder = tmp_path / "nvidia-h200"
    folder.mkdir()
    path = folder / f"{kernel}.json"
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    accepted = rejected = 0
    problems = [shape("paper-7b"), shape("small")]
    for case in range(CASES):
        text = mutate(original, rng)
        path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        runtime.clear_cache()
        for problem in problems:
            choice = runtime.lookup(kernel, problem, gpu="NVIDIA H200", training=case % 2 == 0)
            assert choice.config.variant == kernel
        line, level = check_file(path)
        assert isinstance(line, str) and str(path) in line
        try:
            pf = load(path)
        except ProfileFileError:
            rejected += 1
            assert level == "fail"
            continue
        accepted += 1
        for entry in pf.entries:            # whatever the schema lets through, the spec can read
            assert all(isinstance(v, int) and v > 0 for k, v in entry.bucket.items() if k != "dtype")
    assert accepted > 10 and rejected > CASES // 2, (accepted, rejected)
    runtime.clear_cache()


@pytest.mark.parametrize("corrupt, reason", [
    ({"K": 0}, "not a positive size"), ({"B": 0}, "not a positive size"), ({"K": -64}, "not a positive size"),
    ({"K": "64"}, "should be int"), ({"K": True}, "should be int"), ({"dtype": "bf17"}, "dtype"),
    ({"Nq": 5}, "does not divide"),
])
def test_the_failures_the_review_found_are_named(corrupt, reason, tmp_path):
    doc = json.loads((SHIPPED / "m2rnn_fwd.json").read_text())
    doc["entries"][0]["bucket"].update(corrupt)
    (tmp_path / "nvidia-h200").mkdir()
    path = tmp_path / "nvidia-h200" / "m2rnn_fwd.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileFileError, match=reason):
        load(path)
    assert check_file(path)[1] == "fail"


@pytest.mark.parametrize("text, reason", [
    ('{"time_ms": 1e400}', "does not fit a float"), ('{"time_ms": NaN}', "not a number"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
])
def test_numbers_and_nesting_json_allows_are_refused(text, reason, tmp_path):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ProfileFileError, match=reason):
        load(path)


@pytest.mark.parametrize("params, reason", [({"BLOCK_K": 3}, "BLOCK_K=3 not in"), ({"STRAY": 1}, "unknown parameter")])
def test_configs_are_checked_against_the_kernels_spec(params, reason, tmp_path):
    doc = json.loads((SHIPPED / "m2rnn_fwd.json").read_text())
    doc["entries"][0]["config"].update(params)
    path = tmp_path / "m2rnn_fwd.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileFileError, match=reason):
        load(path)
