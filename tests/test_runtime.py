"""Runtime lookup of tuned configs, the shipped H200 profile, broken files, export round trip."""
import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import triton
from click.testing import CliRunner

from m2tune import cli
from m2tune import runtime, variants
from m2tune.gpu import canonical_gpu
from m2tune.kernel_variants.m2rnn.spec import FORWARD, STATE_ROUNDING
from m2tune.ops import configs_for
from m2tune.problem import Problem, shape
from m2tune.profile_file import bucket_of, dumps

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "profiles" / "nvidia-h200"


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(runtime.ENV_OVERRIDE, raising=False)
    runtime.clear_cache()
    yield
    runtime.clear_cache()


def shipped_entry(kernel, name):
    data = json.loads((SHIPPED / f"{kernel}.json").read_text())
    return next(e for e in data["entries"] if e["name"] == name)


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H200", "nvidia-h200"), ("NVIDIA H200 NVL", "nvidia-h200"), ("nvidia-h200", "nvidia-h200"),
    ("NVIDIA H100 80GB HBM3", "nvidia-h100"), ("NVIDIA H100 PCIe", "nvidia-h100"),
    ("NVIDIA A100-SXM4-80GB", "nvidia-a100"), ("Tesla V100-SXM2-16GB", "tesla-v100"),
    ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
])
def test_gpu_names_are_normalised(name, slug):
    assert canonical_gpu(name) == slug


@pytest.mark.parametrize("kernel", ["m2rnn_fwd", "m2rnn_bwd"])
@pytest.mark.parametrize("shape_name", ["paper-7b", "paper-400m"])
def test_shipped_h200_profile_gives_the_exact_bucket(kernel, shape_name):
    choice = runtime.lookup(kernel, shape(shape_name), gpu="NVIDIA H200")
    assert choice.source == str(SHIPPED / f"{kernel}.json")
    assert choice.reason == f"exact bucket {shape_name}" and choice.measured and choice.distance == 0
    expected = shipped_entry(kernel, shape_name)["config"]
    assert {k: choice.config[k] for k in expected} == expected


def test_nearest_bucket_by_the_documented_distance():
    problem = Problem(B=8, S=2048, K=64, V=16, Nq=1, Nk=1, Nv=132, Nw=132, Nf=132)
    choice = runtime.lookup("m2rnn_fwd", problem, gpu="nvidia-h200")
    entries = json.loads((SHIPPED / "m2rnn_fwd.json").read_text())["entries"]
    nearest = min((e for e in entries if e["measured"]), key=lambda e: runtime.distance(problem, e["bucket"]))
    assert choice.bucket == nearest["name"] and choice.reason.startswith("nearest bucket")
    assert choice.distance == pytest.approx(runtime.distance(problem, nearest["bucket"]))


def test_distance_terms():
    p = shape("paper-7b")
    b = bucket_of(p)
    assert runtime.distance(p, b) == 0
    assert runtime.distance(p, {**b, "dtype": "float16"}) is None             # never across dtypes
    assert runtime.distance(p, {**b, "K": 128}) == pytest.approx(4)           # 4 |log2 K/K'|
    assert runtime.distance(p, {**b, "S": 1024}) == pytest.approx(1)          # 0.5 |log2 S/S'|
    assert runtime.distance(p, {**b, "B": 8}) == pytest.approx(1)             # |log2 BN/B'N'|
    assert runtime.distance(p, {**b, "Nq": 132, "Nk": 132}) == pytest.approx(2)   # sharing differs


def test_untuned_gpu_gets_a_checked_default_and_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="m2tune.runtime")
    for S in (1024, 2048):
        choice = runtime.lookup("m2rnn_fwd", shape("paper-7b").with_length(S), gpu="NVIDIA B200")
        assert choice.source == "default" and "no tuned m2rnn_fwd config for nvidia-b200" in choice.reason
        assert variants.spec("m2rnn_fwd").check(shape("paper-7b"), choice.config) is None
    assert sum("nvidia-b200" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("problem", [shape("square-64"), Problem(B=2, S=64, K=128, V=64, Nv=8, Nw=8, Nf=8),
                                     shape("tiny")], ids=["square-64", "k128-v64", "tiny-fp32"])
@pytest.mark.parametrize("kernel", ["m2rnn_fwd", "m2rnn_bwd"])
@pytest.mark.parametrize("interpreter", [False, True])
def test_the_default_fits_wide_and_fp32_problems(problem, kernel, interpreter):
    """V=64 needs more warps than the GPU starting point has; fp32 refuses tf32 dW: the ladder copes."""
    choice = runtime.lookup(kernel, problem, gpu=None if interpreter else "NVIDIA B200", interpreter=interpreter)
    assert choice.source == "default"
    assert variants.spec(kernel).check(problem, choice.config, interpreter=interpreter) is None
    if not interpreter and problem.dtype != "float32":
        assert choice.config["MATMUL"] == "dot_tf32x3"          # still the fp32-accurate GPU default


def _write(folder: Path, gpu: str, kernel: str, entries, **header) -> Path:
    doc = dict(gpu={"name": gpu, "slug": gpu, "capability": "9.0"},
               versions={"triton": triton.__version__, "torch": "x", "m2tune": "x"},
               variant_hash=variants.source_hash(kernel))
    doc.update(header)
    path = folder / gpu / f"{kernel}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(kernel, doc["gpu"], doc["versions"], doc["variant_hash"], entries))
    return path


def _entry(problem, config, *, measured=True, name="mine"):
    return {"bucket": bucket_of(problem), "name": name, "config": config, "measured": measured, "time_ms": 1.0}


def test_user_override_folder_wins(tmp_path, monkeypatch):
    mine = {"BLOCK_K": 32, "MATMUL": "dot_tf32x3", "TANH": "approx", "num_warps": 2}
    path = _write(tmp_path, "nvidia-h200", "m2rnn_fwd", [_entry(shape("paper-7b"), mine)])
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    choice = runtime.lookup("m2rnn_fwd", shape("paper-7b"), gpu="nvidia-h200")
    assert choice.source == str(path) and choice.config["num_warps"] == 2


def test_measured_beats_predicted_and_unfit_entries_are_passed_over(tmp_path, monkeypatch):
    p = shape("paper-7b")
    predicted = _entry(p, {"BLOCK_K": 32, "MATMUL": "dot_tf32", "TANH": "approx"}, measured=False)
    _write(tmp_path, "nvidia-h200", "m2rnn_fwd", [predicted])
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    choice = runtime.lookup("m2rnn_fwd", p, gpu="nvidia-h200")
    assert choice.measured and choice.source.startswith(str(SHIPPED))          # shipped measured entry
    runtime.clear_cache()
    unfit = _entry(p, {"BLOCK_K": 3, "MATMUL": "dot_bf16"})                     # BLOCK_K=3 is no choice
    _write(tmp_path, "nvidia-h200", "m2rnn_fwd", [unfit])
    choice = runtime.lookup("m2rnn_fwd", p, gpu="nvidia-h200")
    assert choice.source.startswith(str(SHIPPED))
    assert any("BLOCK_K=3 not in" in s for s in choice.skipped)           # the entry, not the file
    runtime.clear_cache()
    too_big = _entry(p, {"BLOCK_K": 128, "MATMUL": "dot_bf16"})                 # K=64: no 128 blocks
    _write(tmp_path, "nvidia-h200", "m2rnn_fwd", [too_big])
    choice = runtime.lookup("m2rnn_fwd", p, gpu="nvidia-h200")
    assert choice.source.startswith(str(SHIPPED))
    assert any("does not fit" in s for s in choice.skipped), choice.skipped


BROKEN = {
    "corrupt": lambda path: path.write_text("{not json"),
    "schema": lambda path: path.write_text(path.read_text().replace('"schema": 1', '"schema": 2')),
    "other-gpu": lambda path: path.write_text(path.read_text().replace('"slug": "nvidia-h200"',
                                                                      '"slug": "nvidia-a100"')),
    "stale-source": lambda path: path.write_text(path.read_text().replace(
        variants.source_hash("m2rnn_fwd"), "0123456789abcdef")),
    "no-entries": lambda path: path.write_text(json.dumps(
        {k: v for k, v in json.loads(path.read_text()).items() if k != "entries"})),
    "bad-bucket": lambda path: path.write_text(path.read_text().replace('"K": 64', '"K": "sixty-four"')),
}
WORDS = {"corrupt": "not readable JSON", "schema": "schema 2", "other-gpu": "tuned for GPU",
         "stale-source": "stale, tuned for other",
         "no-entries": "missing 'entries'", "bad-bucket": "'K' should be int, got str"}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_files_are_skipped_with_one_warning(kind, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="m2tune.runtime")
    path = _write(tmp_path, "nvidia-h200", "m2rnn_fwd",
                  [_entry(shape("paper-7b"), {"BLOCK_K": 32, "MATMUL": "dot_tf32x3", "num_warps": 2})])
    BROKEN[kind](path)
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    for S in (4096, 2048):                          # two lookups, one warning
        choice = runtime.lookup("m2rnn_fwd", shape("paper-7b").with_length(S), gpu="nvidia-h200")
        assert choice.source.startswith(str(SHIPPED))                         # fell through to shipped
        assert any(WORDS[kind] in s for s in choice.skipped), choice.skipped
    warnings = [r.message for r in caplog.records if str(path) in r.message]
    assert len(warnings) == 1 and WORDS[kind] in warnings[0]


def test_the_layer_and_the_op_use_the_looked_up_configs():
    from m2tune import M2RNN
    layer = M2RNN(256, 132, 64, 16, num_q_heads=1, num_k_heads=1)
    choices = layer.kernel_choices(4, 4096, gpu="NVIDIA H200")
    problem = shape("paper-7b")
    assert choices["forward"] == runtime.lookup("m2rnn_fwd", problem, gpu="nvidia-h200", training=True)
    assert choices["backward"].reason == "exact bucket paper-7b"
    # what the op would launch with on that GPU
    assert configs_for(problem, None, gpu="nvidia-h200", interpreter=False) == (
        choices["forward"].config, choices["backward"].config)
    # under the Triton interpreter (CPU) the op never uses GPU profiles: PTX tanh cannot run there
    fwd, _ = configs_for(problem, None, gpu=None, interpreter=True)
    assert fwd == runtime.lookup("m2rnn_fwd", problem, interpreter=True).config and fwd["TANH"] == "exact"


def test_training_passes_over_forwards_that_round_the_state(tmp_path, monkeypatch):
    """The shipped paper-7b forward (dot_bf16) serves inference; training gets the entry's training
    config; an entry without one is passed over for training, with the reason."""
    problem = shape("paper-7b")
    infer = runtime.lookup("m2rnn_fwd", problem, gpu="nvidia-h200")
    train = runtime.lookup("m2rnn_fwd", problem, gpu="nvidia-h200", training=True)
    assert infer.reason == "exact bucket paper-7b" and infer.config["MATMUL"] in STATE_ROUNDING
    assert train.reason == "exact bucket paper-7b, training entry" and train.measured
    assert FORWARD.training_reason(train.config) is None
    # backward entries are not filtered: their products never write checkpoints
    assert runtime.lookup("m2rnn_bwd", problem, gpu="nvidia-h200", training=True).config == \
        runtime.lookup("m2rnn_bwd", problem, gpu="nvidia-h200").config

    mine = {"BLOCK_K": 32, "MATMUL": "dot_bf16", "TANH": "approx"}
    _write(tmp_path, "nvidia-h200", "m2rnn_fwd", [_entry(problem, mine, name="paper-7b")])
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    runtime.clear_cache()
    assert runtime.lookup("m2rnn_fwd", problem, gpu="nvidia-h200").source.startswith(str(tmp_path))
    train = runtime.lookup("m2rnn_fwd", problem, gpu="nvidia-h200", training=True)
    assert train.source.startswith(str(SHIPPED)) and train.config["MATMUL"] not in STATE_ROUNDING
    assert any(str(tmp_path) in s and "not used for training" in s for s in train.skipped), train.skipped


def test_the_op_plans_a_training_forward_exactly_when_gradients_flow(monkeypatch):
    import torch

    from m2tune import ops
    seen = []

    def plan(problem, device_type, config, clip, training):
        seen.append(training)
        return False, "", 0, problem.B, 0          # the reference runs: only the flag matters here
    monkeypatch.setattr(ops, "_plan", plan)
    x = [torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4), torch.eye(4)[None],
         torch.rand(1, 3, 1)]
    ops.m2rnn(*x)
    ops.m2rnn(*x[:3], x[3].clone().requires_grad_(), x[4])
    with torch.no_grad():
        ops.m2rnn(*x[:3], x[3].clone().requires_grad_(), x[4])
    assert seen == [False, True, False]

    monkeypatch.undo()
    monkeypatch.setattr(ops, "_kernels_available", lambda device: True)
    monkeypatch.setattr(ops, "current_gpu", lambda device=None: "nvidia-h200")
    monkeypatch.setattr(variants, "interpreting", lambda: False)       # as on the GPU machine
    _, train, *_ = ops._plan(shape("paper-7b"), "cuda", None, 0.0, True)
    _, infer, *_ = ops._plan(shape("paper-7b"), "cuda", None, 0.0, False)
    assert json.loads(train)["forward"]["params"]["MATMUL"] not in STATE_ROUNDING
    assert json.loads(infer)["forward"]["params"]["MATMUL"] == "dot_bf16"


def test_cli_show_and_check(tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli.main, ["show", "--shape", "paper-7b", "--gpu", "NVIDIA H200 NVL"])
    assert out.exit_code == 0, out.output
    assert "exact bucket paper-7b (measured)" in out.output and str(SHIPPED) in out.output
    assert "training: m2rnn_fwd: exact bucket paper-7b, training entry (measured)" in out.output
    ok = runner.invoke(cli.main, ["check", str(ROOT / "profiles")])
    assert ok.exit_code == 0 and "FAIL" not in ok.output, ok.output
    path = _write(tmp_path, "nvidia-h200", "m2rnn_fwd", [_entry(shape("paper-7b"), {"BLOCK_K": 16})])
    BROKEN["stale-source"](path)
    bad = runner.invoke(cli.main, ["check", str(tmp_path)])
    assert bad.exit_code == 1 and "FAIL" in bad.output and "stale" in bad.output


def _other_triton(path: Path) -> None:
    path.write_text(path.read_text().replace(f'"triton": "{triton.__version__}"', '"triton": "3.0.0"'))


def test_a_profile_tuned_with_another_triton_is_used_with_one_notice(tmp_path, monkeypatch, caplog):
    """The compatibility key is the kernel source and the schema: a Triton upgrade keeps the tuning."""
    caplog.set_level(logging.WARNING, logger="m2tune.runtime")
    p = shape("paper-7b")
    path = _write(tmp_path, "nvidia-h200", "m2rnn_fwd",
                  [_entry(p, {"BLOCK_K": 32, "MATMUL": "dot_tf32x3", "num_warps": 2})])
    _other_triton(path)
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    for S in (4096, 2048):
        choice = runtime.lookup("m2rnn_fwd", p.with_length(S), gpu="NVIDIA H200 NVL")   # a name, not a slug
        assert choice.source == str(path) and choice.config["num_warps"] == 2
    notices = [r.message for r in caplog.records if str(path) in r.message]
    assert len(notices) == 1 and "tuned with Triton 3.0.0, running" in notices[0]
    runner = CliRunner()
    warned = runner.invoke(cli.main, ["check", str(tmp_path)])
    assert warned.exit_code == 0 and "WARN" in warned.output and "tuned with Triton 3.0.0" in warned.output
    strict = runner.invoke(cli.main, ["check", str(tmp_path), "--strict"])
    assert strict.exit_code == 1


def test_the_op_uses_entries_tuned_with_another_triton(tmp_path, monkeypatch):
    from m2tune import ops
    for kernel in ("m2rnn_fwd", "m2rnn_bwd", "m2rnn_bwd_lean"):
        folder = tmp_path / "nvidia-h200"
        folder.mkdir(exist_ok=True)
        (folder / f"{kernel}.json").write_text((SHIPPED / f"{kernel}.json").read_text())
        _other_triton(folder / f"{kernel}.json")
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    monkeypatch.setattr(variants, "interpreting", lambda: False)       # as on the GPU machine
    choices = ops.choices_for(shape("paper-7b"), gpu="NVIDIA H200", interpreter=False, training=True)
    for role, choice in choices.items():
        assert choice.source.startswith(str(tmp_path)) and choice.exact, (role, choice.describe(), choice.skipped)


def test_import_is_fast_and_pulls_in_no_tuning_libraries():
    code = ("import time, sys; t = time.perf_counter(); import m2tune; from m2tune import runtime, M2RNN; "
            "print(time.perf_counter() - t); print(','.join(m for m in ('optuna', 'pandas', 'plotly') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    seconds, loaded = out.stdout.strip().split("\n") + [""] * (2 - len(out.stdout.strip().split("\n")))
    print(f"import m2tune + runtime + M2RNN: {float(seconds):.2f} s")
    assert loaded == ""
    assert float(seconds) < 20.0          # generous: torch's own import dominates (about 2-4 s here)


def test_round_trip_study_to_file_to_lookup(tmp_path, monkeypatch):
    """A real (model backend) study -> m2tune export -> the runtime picks its best config."""
    from m2tune.tuning.export import export
    from m2tune.tuning.options import TuneOptions
    from m2tune.tuning.tune import Tuner
    storage = f"sqlite:///{tmp_path}/s.db"
    result = Tuner(TuneOptions(shape="tiny", backend="model", target="nvidia-h200", trials=2,
                               storage=storage)).run()
    (written,) = export(storage, tmp_path / "profiles")
    assert written == tmp_path / "profiles" / "nvidia-h200" / "m2rnn_fwd.json"
    text = written.read_text()
    again = export(storage, tmp_path / "profiles")                   # stable, diff-friendly output
    assert again == [written] and written.read_text() == text
    entry = json.loads(text)["entries"][0]
    assert entry["measured"] is False and entry["predicted_for"] == "nvidia-h200"
    assert entry["trials"] == result["scored"] and entry["study"] == result["study"]
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path / "profiles"))
    choice = runtime.lookup("m2rnn_fwd", shape("tiny"), gpu="nvidia-h200")
    assert choice.reason == "exact bucket tiny" and choice.measured is False
    assert choice.config.as_dict() == result["best"]["config"]


TRAINING_SPACE = """\
variant: m2rnn_fwd
params:
  MATMUL: {choices: [fma, dot_bf16, dot_ieee]}
  BLOCK_K: {choices: [16]}
buckets:
  - {name: small-k32, shape: small, K: 32}
"""


def test_export_adds_a_training_entry_when_the_winner_rounds_the_state(tmp_path, monkeypatch):
    """bf16 products win the (model backend) study: the file keeps them for inference and the best
    state-accurate trial as the bucket's training entry, which the runtime uses with gradients."""
    from m2tune.tuning.export import export
    from m2tune.tuning.options import TuneOptions
    from m2tune.tuning.tune import Tuner
    space = tmp_path / "space.yaml"
    space.write_text(TRAINING_SPACE)
    storage = f"sqlite:///{tmp_path}/s.db"
    # K=32: the interpreter proves each trial's plan in half the time of the small shape's K=64
    Tuner(TuneOptions(shape="small-k32", backend="model", target="nvidia-h200", trials=3, storage=storage,
                      space=str(space), sampler="grid")).run()
    (written,) = export(storage, tmp_path / "profiles")
    entry = json.loads(written.read_text())["entries"][0]
    assert entry["config"]["MATMUL"] == "dot_bf16"
    accurate = entry["training"]["config"]["MATMUL"]
    assert accurate in ("fma", "dot_ieee") and entry["training"]["time_ms"] > entry["time_ms"]
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path / "profiles"))
    small_k32 = replace(shape("small"), K=32)
    infer = runtime.lookup("m2rnn_fwd", small_k32, gpu="nvidia-h200")
    train = runtime.lookup("m2rnn_fwd", small_k32, gpu="nvidia-h200", training=True)
    assert infer.reason == "exact bucket small-k32" and infer.config["MATMUL"] == "dot_bf16"
    assert train.reason == "exact bucket small-k32, training entry" and train.config["MATMUL"] == accurate


def test_export_takes_a_confirm_winner_without_a_trial_of_its_own(tmp_path):
    """The confirm stage may pick the default config (memory tie-break) when the study never ran it:
    the entry then carries that config and its confirmed time, not another trial's."""
    import optuna

    from m2tune.tuning.export import export
    from m2tune.tuning.storage import open_storage
    from m2tune.tuning.options import TuneOptions
    from m2tune.tuning.tune import Tuner
    storage = f"sqlite:///{tmp_path}/s.db"
    tuner = Tuner(TuneOptions(shape="small", backend="model", target="nvidia-h200", trials=1, storage=storage))
    tuner.run()
    ran = {json.dumps(t.user_attrs.get("config"), sort_keys=True) for t in tuner.study.get_trials()}
    winner = {**tuner.space.config({}).as_dict(), "BLOCK_K": 64, "num_warps": 4}
    assert json.dumps(winner, sort_keys=True) not in ran
    study = optuna.load_study(study_name=tuner.name, storage=open_storage(storage))
    study.set_user_attr("confirm", {"winner": {"config": winner, "median_ms": 1.25}, "default_ms": 9.0})
    (written,) = export(storage, tmp_path / "profiles")
    entry = json.loads(written.read_text())["entries"][0]
    assert entry["config"] == winner and entry["time_ms"] == 1.25 and entry["default_ms"] == 9.0
    assert entry["resources"] is None and entry["spread"] is None


# ---- what an entry's validation covered decides which calls may use it (m2tune/coverage.py)

def _backward_entry(problem, validated=None, **kw):
    entry = _entry(problem, {"BLOCK_K": 16, "CKPT": 16, "MATMUL": "dot_tf32x3", "num_warps": 2}, **kw)
    if validated is not None:
        entry["validated"] = validated
    return entry


@pytest.mark.parametrize("validated, h0, clipping, used", [
    ({"plan": 2, "where": "gpu", "paths": ["chunks", "h0", "clip", "packed"]}, True, True, True),
    ({"plan": 2, "where": "gpu", "paths": ["chunks", "packed"]}, False, False, True),
    ({"plan": 2, "where": "gpu", "paths": ["chunks", "packed"]}, True, False, False),      # h0 unproven
    ({"plan": 2, "where": "gpu", "paths": ["chunks", "h0"]}, False, True, False),          # clip unproven
    ({"plan": 2, "where": "gpu", "paths": [], "failed": "wrong-result: dq"}, False, False, False),
    (None, False, False, True),                  # before the plan: a GPU backward ran several chunks
    (None, True, False, False),                  # ... but never h0
], ids=["all", "plain-call", "h0-missing", "clip-missing", "failed", "legacy-plain", "legacy-h0"])
def test_an_entry_is_used_only_for_calls_its_validation_covered(tmp_path, monkeypatch, validated, h0,
                                                                  clipping, used):
    p = replace_h0(shape("paper-7b"), h0)
    _write(tmp_path, "nvidia-h200", "m2rnn_bwd", [_backward_entry(p, validated)])
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    choice = runtime.lookup("m2rnn_bwd", p, gpu="nvidia-h200", training=True, clipping=clipping)
    mine = choice.source.startswith(str(tmp_path))
    assert mine == used, (choice.describe(), choice.skipped)
    if not used:
        reason = "its validation failed" if validated and "failed" in validated else "did not cover"
        assert any(reason in s for s in choice.skipped), choice.skipped


def replace_h0(problem, h0):
    from dataclasses import replace
    return replace(problem, h0=h0)


def test_a_predicted_entry_from_before_the_plan_is_not_used_for_training(tmp_path, monkeypatch):
    p = shape("paper-7b")
    fwd = _entry(p, {"BLOCK_K": 32, "MATMUL": "dot_tf32x3", "TANH": "approx"}, measured=False)
    _write(tmp_path, "nvidia-a100", "m2rnn_fwd", [fwd])
    monkeypatch.setenv(runtime.ENV_OVERRIDE, str(tmp_path))
    assert runtime.lookup("m2rnn_fwd", p, gpu="nvidia-a100").tuned                 # inference: nothing to cover
    runtime.clear_cache()
    choice = runtime.lookup("m2rnn_fwd", p, gpu="nvidia-a100", training=True)      # checkpoints: unproven
    assert not choice.tuned and any("chunks" in s for s in choice.skipped)
