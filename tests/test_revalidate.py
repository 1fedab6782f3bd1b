"""`m2tune check --revalidate`: shipped-style entries are proven on today's plan, in place; a wrong
one is recorded as failed and the runtime then uses it for nothing."""
from __future__ import annotations

import json

from click.testing import CliRunner

from m2tune import cli, runtime, variants
from m2tune.problem import Problem
from m2tune.profile_file import bucket_of, load
from m2tune.tuning.revalidate import revalidate_file
from tests import planted_variants as planted
from tests.interpreter import needs_interpreter

from .test_runtime import _write

BUCKET = Problem(B=2, S=64, K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype="float32")


def _entry(config, name="small"):
    return {"bucket": bucket_of(BUCKET), "name": name, "config": config, "measured": True, "time_ms": 1.0}


@needs_interpreter
def test_revalidate_records_the_plan_and_the_runtime_uses_the_entry_for_h0(tmp_path, monkeypatch):
    path = _write(tmp_path, "nvidia-h200", "m2rnn_bwd",
                  [_entry({"BLOCK_K": 16, "CKPT": 16, "MATMUL": "dot_ieee", "TANH": "approx"})])
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    with_state = Problem(**{**bucket_of(BUCKET), "h0": True})
    runtime.clear_cache()
    assert not runtime.lookup("m2rnn_bwd", with_state, gpu="nvidia-h200", training=True).source.startswith(
        str(tmp_path))                                          # before: never validated with h0
    result = CliRunner().invoke(cli.main, ["check", str(tmp_path), "--revalidate", "--on", "interpreter"])
    assert result.exit_code == 0, result.output
    assert "ok on plan v2 (interpreter: chunks, h0, clip, packed)" in result.output
    record = load(path).entries[0].raw["validated"]
    assert record["plan"] == 2 and record["where"] == "interpreter" and "TANH=exact" in record["as"]
    runtime.clear_cache()
    choice = runtime.lookup("m2rnn_bwd", with_state, gpu="nvidia-h200", training=True, clipping=True)
    assert choice.source == str(path), choice.skipped
    runtime.clear_cache()


@needs_interpreter
def test_a_wrong_entry_is_recorded_as_failed_and_used_for_nothing(tmp_path, monkeypatch):
    variants.register(planted.NAME, planted.SPEC_REF, planted.MODULE)
    good = planted.DEFAULT.with_params(FAULT="none", BLOCK_K=16, MATMUL="dot_ieee").as_dict()
    wrong = {**good, "FAULT": "wrong"}
    path = _write(tmp_path, "nvidia-h200", planted.NAME, [_entry(wrong)])
    results = revalidate_file(path, gpu=False, extra_variants={planted.NAME: (planted.SPEC_REF, planted.MODULE)})
    assert [r.ok for r in results] == [False] and "wrong-result" in results[0].record["failed"]
    doc = json.loads(path.read_text())
    assert doc["entries"][0]["validated"]["paths"] == []
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    runtime.clear_cache()
    choice = runtime.lookup(planted.NAME, BUCKET, gpu="nvidia-h200")          # not even inference
    assert not choice.tuned and any("did not cover" in s or "validation failed" in s for s in choice.skipped), \
        choice.skipped
    runtime.clear_cache()
