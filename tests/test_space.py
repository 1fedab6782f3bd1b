"""Search-space files: the shipped ones, malformed ones, and the rule language."""
from __future__ import annotations

import ast
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path

import optuna.distributions as od
import pytest

from m2tune.tuning import space_file as sp
from m2tune import variants
from m2tune.problem import SHAPES, Problem
from m2tune.tuning.rules import RuleError, compile_rule
from m2tune.tuning.space import SpaceError
from m2tune.tuning.space_file import load_space

ROOT = Path(__file__).resolve().parent.parent

# the configs measured fastest on the H200 (docs/design.md, bench grids), which the files must enqueue
MEASURED = {
    "m2rnn_fwd": [dict(MATMUL="dot_tf32x3", TANH="approx", BLOCK_K=32, num_warps=1),
                  dict(MATMUL="dot_bf16", TANH="approx", BLOCK_K=16, num_warps=1)],
    "m2rnn_bwd": [dict(MATMUL="dot_tf32x3", TANH="approx", BLOCK_K=16, num_warps=1, CKPT=64)],
    "m2rnn_bwd_lean": [dict(MATMUL="dot_bf16", TANH="approx", BULK=2, CKPT=16, num_warps=1)],
}
# rules that prune configs check() would accept, on purpose: heuristics, not mirrors of check()
HEURISTICS = ("only idle", "SLOTS", "were 1.4-3x slower")


@pytest.fixture(scope="module", params=["m2rnn_fwd", "m2rnn_bwd", "m2rnn_bwd_lean"])
def shipped(request):
    return load_space(request.param), variants.spec(request.param)


# ---- the shipped files ---------------------------------------------------------------------

def test_shipped_files_load_with_their_variant(shipped):
    space, module = shipped
    assert space.variant == module.name
    assert space.source.name == f"{module.name}.yaml"
    assert set(space.params) <= set(module.PARAMS)
    assert space.defaults == module.DEFAULT.as_dict()
    for name, param in space.params.items():
        assert all(v in module.PARAMS[name] for v in param.values()), name
    assert len(space.constraints) >= 5 and all(c.why for c in space.constraints)


def test_buckets_are_problems_covering_the_shapes_asked_for(shipped):
    space, _ = shipped
    names = [b.name for b in space.buckets]
    assert len(names) == len(set(names)) and len(names) >= 20           # issue 18: at least 20 per kernel
    assert all(isinstance(b.problem, Problem) for b in space.buckets)
    for shape in ("paper-400m", "paper-7b", "square-64"):
        assert space.bucket(shape).problem == SHAPES[shape]
    assert {32, 64, 128} <= {b.problem.K for b in space.buckets}
    assert {16, 32, 64} <= {b.problem.V for b in space.buckets}
    assert len({(b.problem.B, b.problem.N) for b in space.buckets}) >= 5
    assert len({b.problem.S for b in space.buckets}) >= 3
    shared = space.bucket("k64-v16-b1-n132-s8192").problem
    assert (shared.B, shared.S, shared.Nq, shared.Nk, shared.Nv, shared.Nw, shared.Nf) == \
        (1, 8192, 1, 1, 132, 132, 132)
    # long context at B=1 and 2, a short small batch, and the paper shapes in fp32
    assert {(b.problem.B, b.problem.S) for b in space.buckets if b.problem.N == 132} >= \
        {(1, 16384), (2, 16384), (1, 32768), (2, 32768), (1, 2048)}
    for shape in ("paper-400m", "paper-7b", "square-64"):
        assert space.bucket(f"{shape}-fp32").problem == SHAPES[shape].with_dtype("float32")


def test_distributions_are_the_right_optuna_types(shipped):
    space, _ = shipped
    dists = space.distributions()
    assert list(dists) == list(space.params)
    for name, dist in dists.items():
        param = space.params[name]
        if param.is_range:
            assert isinstance(dist, od.IntDistribution)
            assert (dist.low, dist.high, dist.step, dist.log) == (param.low, param.high, param.step, param.log)
        else:
            assert isinstance(dist, od.CategoricalDistribution)
            assert list(dist.choices) == param.values()
    assert isinstance(dists["PREFETCH"], od.IntDistribution) and (dists["PREFETCH"].low, dists["PREFETCH"].high) == (0, 2)
    assert isinstance(dists["MATMUL"], od.CategoricalDistribution)


def test_starting_points_are_the_default_then_the_measured_configs(shipped):
    space, module = shipped
    points = space.starting_points()
    default = module.DEFAULT.as_dict()
    assert points[0] == {name: default[name] for name in space.params}
    for measured in MEASURED[space.variant]:
        assert {**points[0], **measured} in points
    for point in points:
        assert set(point) == set(space.params)
        assert all(point[name] in space.params[name] for name in point)


ROUNDING = {"dot_tf32", "dot_bf16", "dot_bf16x2"}


def test_enqueued_configs_pass_constraints_and_check_where_measured(shipped):
    # measured at V=16 (paper-7b); a V=64 tile may not fit the same config, which check() rejects too
    space, module = shipped
    v16 = [b for b in space.buckets if b.problem.V == 16]
    assert len(v16) >= 4
    for bucket in v16:
        for point in space.starting_points():
            if point.get("BLOCK_B", 1) > bucket.problem.B:
                continue          # measured at B=4: a smaller batch rejects the block, by design
            if bucket.problem.dtype == "float32" and ROUNDING & {point.get("MATMUL"), point.get("DW_MATMUL")}:
                continue          # measured in bf16: an fp32 problem rejects rounded products, by design
            assert space.violations(point, bucket.problem) == [], (bucket.name, point)
            assert module.check(bucket.problem, space.config(point)) is None, (bucket.name, point)


def test_rules_that_mirror_check_never_reject_what_check_accepts(shipped):
    space, module = shipped
    points = list(space.grid())
    random.Random(0).shuffle(points)
    pruned = 0
    for bucket in space.buckets:
        for point in points[:300]:
            broken = space.violations(point, bucket.problem)
            pruned += bool(broken)
            if module.check(bucket.problem, space.config(point)) is None:
                assert all(any(h in why for h in HEURISTICS) for why in broken), (bucket.name, point, broken)
    assert pruned > 0                      # the rules do prune


def test_constraints_prune_what_they_say():
    space = load_space("m2rnn_fwd")
    problem = SHAPES["paper-7b"]
    assert space.violations({"BLOCK_K": 128, "MATMUL": "dot_bf16"}, problem) == [space.constraints[0].why]
    assert len(space.violations({"BLOCK_K": 128}, problem)) == 2      # fma: the register bound too
    fp32 = problem.with_dtype("float32")
    assert any("fp32" in why for why in space.violations({"MATMUL": "dot_bf16"}, fp32))
    assert space.violations({"MATMUL": "dot_ieee"}, fp32) == []
    kept = list(space.grid(problem))
    assert 0 < len(kept) < space.size()
    assert all(space.violations(point, problem) == [] for point in kept[:50])


def test_config_merges_the_variant_defaults():
    space = load_space("m2rnn_bwd")
    module = variants.spec("m2rnn_bwd")
    config = space.config({"BLOCK_K": 32, "MATMUL": "dot_bf16"})
    assert config == module.DEFAULT.with_params(BLOCK_K=32, MATMUL="dot_bf16")
    assert space.violations(config, SHAPES["paper-7b"]) == []
    with pytest.raises(ValueError, match="BLOCK_Q"):
        space.config({"BLOCK_Q": 1})


def test_load_by_name_or_path_and_bucket_lookup():
    by_name = load_space("m2rnn_fwd")
    by_path = load_space(ROOT / "search_spaces" / "m2rnn_fwd.yaml")
    assert by_name.source == by_path.source and by_name.buckets == by_path.buckets
    assert sp.bundled() == ["m2rnn_bwd", "m2rnn_bwd_lean", "m2rnn_fwd"]
    with pytest.raises(KeyError, match="paper-7b"):
        by_name.bucket("paper-70b")
    with pytest.raises(FileNotFoundError, match="m2rnn_fwd"):
        load_space("m2rnn_nope")


def test_reading_a_space_pulls_in_neither_triton_torch_nor_optuna():
    code = ("import sys, m2tune.tuning.space, m2tune.tuning.space_file as f; f.load_space('m2rnn_bwd'); "
            "print(','.join(m for m in ('triton', 'torch', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module", ["space.py", "space_file.py", "rules.py"])
def test_space_modules_never_call_eval_exec_or_compile(module):
    tree = ast.parse((ROOT / "m2tune" / "tuning" / module).read_text())
    called = {node.func.id for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}


# ---- small spaces written to tmp_path --------------------------------------------------------

GOOD = """\
variant: m2rnn_fwd
params:
  BLOCK_K: {choices: [8, 16, 32]}
  PREFETCH: {low: 0, high: 2}
  MATMUL: {choices: [fma, dot_bf16]}
constraints:
  - rule: BLOCK_K // 2 < K
    why: too many rows
  - {rule: "MATMUL == 'fma' or BLOCK_K >= 16", why: small dot}
enqueue:
  - {BLOCK_K: 32, MATMUL: dot_bf16}
buckets:
  - {name: seven, shape: paper-7b}
  - name: small
    B: 2
    S: 64
    K: 16
    V: 16
    N: 4
    shared_qk: true
"""


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"needle {needle!r} found on lines {hits}"
    return hits[0]


def test_small_space_loads(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert list(space.params) == ["BLOCK_K", "PREFETCH", "MATMUL"]
    assert space.size() == 3 * 3 * 2
    grid = list(space.grid())
    assert len(grid) == space.size() and len({tuple(p.items()) for p in grid}) == space.size()
    small = space.bucket("small").problem
    assert small == Problem(B=2, S=64, K=16, V=16, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4)
    # the small problem's K=16 rules out BLOCK_K=32; the dot rule rules out BLOCK_K=8 with bf16
    assert {(p["BLOCK_K"], p["MATMUL"]) for p in space.grid(small)} == {(8, "fma"), (16, "fma"), (16, "dot_bf16")}
    assert space.violations({"BLOCK_K": 8, "MATMUL": "dot_bf16"}, small) == ["small dot"]
    assert space.violations({"BLOCK_K": 32, "MATMUL": "dot_bf16"}, small) == ["too many rows"]
    assert space.starting_points() == [dict(BLOCK_K=16, PREFETCH=1, MATMUL="fma"),
                                       dict(BLOCK_K=32, PREFETCH=1, MATMUL="dot_bf16")]
    assert space.constraints[1].line == line_of(GOOD, "small dot")


def test_log_range_becomes_a_log_int_distribution(tmp_path):
    text = "variant: m2rnn_fwd\nparams:\n  X: {low: 1, high: 8, log: true}\nbuckets:\n  - {name: t, shape: tiny}\n"
    space = load_space(write(tmp_path, text), variant_params={"X": tuple(range(1, 9))})
    dist = space.distributions()["X"]
    assert isinstance(dist, od.IntDistribution) and dist.log and (dist.low, dist.high) == (1, 8)
    assert space.size() == 8 and space.defaults == {"X": 1}


BAD_CASES = {
    # id: (old text, new text, needle on the line the error names, field path, words in the message)
    "yaml-syntax": ("  MATMUL: {choices: [fma, dot_bf16]}", "  MATMUL: {choices: [fma, dot_bf16]]",
                    "MATMUL: {choices", "syntax", "invalid YAML"),
    "unknown-top-key": ("enqueue:\n", "enqueu:\n", "enqueu:", "enqueu", "unknown key"),
    "unknown-variant": ("variant: m2rnn_fwd", "variant: m2rnn_fwdd", "variant:", "variant", "unknown variant"),
    "unknown-param": ("  PREFETCH: {low", "  PREFETCHES: {low", "PREFETCHES", "params.PREFETCHES",
                      "unknown parameter of m2rnn_fwd"),
    "disallowed-choice": ("[8, 16, 32]", "[8, 16,\n    3, 32]", "    3, 32]", "params.BLOCK_K.choices",
                          "3 is not an allowed value of m2rnn_fwd.BLOCK_K"),
    "bool-is-not-an-int": ("[8, 16, 32]", "[8, 16, true]", "BLOCK_K: {choices", "params.BLOCK_K.choices",
                           "True is not an allowed value"),
    "duplicate-choice": ("[8, 16, 32]", "[8, 16, 8]", "BLOCK_K: {choices", "params.BLOCK_K.choices", "listed twice"),
    "default-left-out": ("[8, 16, 32]", "[8, 32]", "BLOCK_K: {choices", "params.BLOCK_K", "default 16"),
    "range-low-above-high": ("{low: 0, high: 2}", "{low: 2,\n    high: 0}", "high: 0",
                             "params.PREFETCH.high", "below low=2"),
    "range-outside-params": ("{low: 0, high: 2}", "{low: 0, high: 3}", "PREFETCH", "params.PREFETCH",
                             "includes 3"),
    "range-not-an-int": ("{low: 0, high: 2}", "{low: 0, high: two}", "PREFETCH", "params.PREFETCH.high",
                         "expected an integer"),
    "choices-and-range": ("{low: 0, high: 2}", "{low: 0, high: 2, choices: [0]}", "PREFETCH",
                          "params.PREFETCH", "either choices or low/high"),
    "duplicate-key": ("  MATMUL: {", "  BLOCK_K: {choices: [16]}\n  MATMUL: {", "BLOCK_K: {choices: [16]}",
                      "params.BLOCK_K", "duplicate key"),
    "unknown-name-in-rule": ("BLOCK_K // 2 < K", "BLOCK_K // 2 < KK", "< KK", "constraints[0].rule",
                             "unknown name 'KK'"),
    "dunder-call": ("BLOCK_K // 2 < K", "__import__('os')", "__import__", "constraints[0].rule",
                    "only min() and max()"),
    "attribute": ("BLOCK_K // 2 < K", "BLOCK_K.bit_length() > 2", "bit_length", "constraints[0].rule",
                  "only min() and max()"),
    "attribute-no-call": ("BLOCK_K // 2 < K", "BLOCK_K.real > 2", "real", "constraints[0].rule",
                          "attribute access not allowed"),
    "comprehension": ("BLOCK_K // 2 < K", "'[x for x in K]'", "for x in", "constraints[0].rule",
                      "comprehensions not allowed"),
    "subscript": ("BLOCK_K // 2 < K", "'(1, 2)[0] == 1'", "[0]", "constraints[0].rule", "subscripts not allowed"),
    "lambda": ("BLOCK_K // 2 < K", "'(lambda: 1)() == 1'", "lambda", "constraints[0].rule", "call"),
    "power": ("BLOCK_K // 2 < K", "BLOCK_K ** 2 < K", "**", "constraints[0].rule", "operator Pow"),
    "true-division": ("BLOCK_K // 2 < K", "BLOCK_K / 2 < K", "/ 2", "constraints[0].rule", "operator Div"),
    "in-a-name": ("BLOCK_K // 2 < K", "BLOCK_K in K", "in K", "constraints[0].rule", "tuple or list"),
    "rule-syntax": ("BLOCK_K // 2 < K", "BLOCK_K // < K", "// < K", "constraints[0].rule", "not a valid expression"),
    "rule-fails-to-evaluate": ("BLOCK_K // 2 < K", "MATMUL < 3", "MATMUL < 3", "constraints[0].rule",
                               "fails to evaluate"),
    "missing-why": ("    why: too many rows\n", "", "BLOCK_K // 2 < K", "constraints[0].why", "missing"),
    "empty-why": ("why: small dot", "why: ''", "why: ''", "constraints[1].why", "empty"),
    "enqueue-outside-values": ("{BLOCK_K: 32, MATMUL: dot_bf16}", "{BLOCK_K: 64, MATMUL: dot_bf16}",
                               "BLOCK_K: 64", "enqueue[0].BLOCK_K", "outside the searched values"),
    "enqueue-unsearched": ("{BLOCK_K: 32, MATMUL: dot_bf16}", "{BLOCK_K: 32, num_warps: 2}", "num_warps: 2",
                           "enqueue[0].num_warps", "not searched"),
    "unknown-shape": ("shape: paper-7b", "shape: paper-70b", "paper-70b", "buckets[0].shape",
                      "unknown shape 'paper-70b'"),
    "heads-not-dividing-N": ("    shared_qk: true\n", "    Nv: 3\n", "Nv: 3", "buckets[1].Nv",
                             "Nv=3 does not divide N=4"),
    "head-above-N": ("    shared_qk: true\n", "    Nq: 8\n", "Nq: 8", "buckets[1].Nq", "largest head count is 8"),
    "shared-qk-without-N": ("    N: 4\n", "", "shared_qk", "buckets[1].shared_qk", "needs N"),
    "bucket-missing-field": ("    S: 64\n", "", "name: small", "buckets[1].S", "missing"),
    "bucket-zero": ("    S: 64\n", "    S: 0\n", "S: 0", "buckets[1].S", "at least 1"),
    "bucket-dtype": ("    S: 64\n", "    S: 64\n    dtype: bf16\n", "dtype", "buckets[1].dtype", "unknown dtype"),
    "duplicate-bucket": ("- name: small", "- name: seven", "- name: seven", "buckets[1].name", "duplicate bucket"),
    "python-tag": ("variant: m2rnn_fwd", "variant: !!python/name:os.system ''", "variant:", "variant",
                  "python/name"),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_malformed_files_name_file_line_and_field(tmp_path, case):
    old, new, needle, field, words = BAD_CASES[case]
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = write(tmp_path, text, f"{case}.yaml")
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    err = caught.value
    line = line_of(text, needle)
    assert (err.source, err.line, err.field) == (str(path), line, field), str(err)
    assert str(err).startswith(f"{path}:{line}: {field}: ")
    assert f"{case}.yaml" in str(err) and words in str(err)


def test_empty_and_non_mapping_files(tmp_path):
    for text, field in (("", "(document)"), ("- 1\n- 2\n", "(document)"), ("variant: m2rnn_fwd\n", "params")):
        path = write(tmp_path, text)
        with pytest.raises(SpaceError, match=rf"space\.yaml:1: {re.escape(field)}: "):
            load_space(path)


def test_space_error_survives_pickling():
    err = SpaceError("a.yaml", 3, "params.X", "bad")
    back = pickle.loads(pickle.dumps(err))
    assert (back.source, back.line, back.field, back.detail, str(back)) == \
        ("a.yaml", 3, "params.X", "bad", "a.yaml:3: params.X: bad")


# ---- the rule language -------------------------------------------------------------------------

NAMES = ("a", "b", "s", "K")


def run(rule: str, **env):
    return compile_rule(rule, NAMES)(env)


@pytest.mark.parametrize("a", [False, True])
@pytest.mark.parametrize("b", [False, True])
def test_boolean_truth_tables(a, b):
    assert run("a and b", a=a, b=b) == (a and b)
    assert run("a or b", a=a, b=b) == (a or b)
    assert run("not a", a=a) == (not a)
    assert run("not a or b", a=a, b=b) == ((not a) or b)
    assert run("a and not b or not a and b", a=a, b=b) == (a != b)
    assert run("1 if a else 2", a=a) == (1 if a else 2)
    assert run("(1 if b else 3) if a else 2", a=a, b=b) == ((1 if b else 3) if a else 2)


@pytest.mark.parametrize("rule, env, expected", [
    ("a // b", dict(a=7, b=2), 3),
    ("a // b", dict(a=-7, b=2), -4),            # floor, as Python, not truncation
    ("a % b", dict(a=-7, b=2), 1),
    ("a % b", dict(a=7, b=-2), -1),
    ("-a + b * 2 - 1", dict(a=3, b=4), 4),
    ("(a + b) * 2", dict(a=3, b=4), 14),
    ("min(a, b, 5)", dict(a=7, b=6), 5),
    ("max(a, b) - min(a, b)", dict(a=2, b=9), 7),
    ("max(-a, b)", dict(a=3, b=-5), -3),
    ("a in (1, 2, 4)", dict(a=4), True),
    ("a in [1, 2, 4]", dict(a=3), False),
    ("a not in (1, 2, 4)", dict(a=3), True),
    ("s in ('fma', 'dot_ieee')", dict(s="fma"), True),
    ("s not in ('fma',)", dict(s="fma"), False),
    ("a in (K, 2 * K)", dict(a=32, K=16), True),
    ("1 <= a <= K", dict(a=8, K=16), True),
    ("1 <= a <= K", dict(a=17, K=16), False),
    ("a < b > K", dict(a=1, b=5, K=3), True),
    ("a == b != K", dict(a=2, b=2, K=2), False),
    ("s == 'fma' or a * 16 >= b", dict(s="dot", a=1, b=32), False),
    ("b == 0 or a // b > 1", dict(a=5, b=0), True),         # short-circuit: no division by zero
    ("b != 0 and a // b > 1", dict(a=5, b=0), False),
    ("2.5 * a > 5", dict(a=3), True),
    ("True and a", dict(a=0), 0),
])
def test_rule_values(rule, env, expected):
    result = run(rule, **env)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("rule, words", [
    ("__import__('os')", "only min() and max()"),
    ("a.bit_length()", "only min() and max()"),
    ("a.real", "attribute access"),
    ("[x for x in b]", "comprehensions"),
    ("a[0]", "subscripts"),
    ("(lambda: 1)", "lambda"),
    ("a ** 2", "Pow"),
    ("a / 2", "Div"),
    ("a << 2", "LShift"),
    ("~a", "Invert"),
    ("a is None", "Is"),
    ("None", "literal None"),
    ("b'x' == s", "literal b'x'"),
    ("a in b", "tuple or list"),
    ("(a, b)", "tuples outside"),
    ("{a: b}", "dicts"),
    ("f'{a}' == s", "f-strings"),
    ("(c := 1)", "assignment expressions"),
    ("min(a)", "two or more"),
    ("min(a, b, key=a)", "two or more"),
    ("min(*a, 1)", "starred"),
    ("__class__", "dunder"),
    ("zeta > 1", "unknown name 'zeta'"),
    ("len(s) > 1", "only min() and max()"),
    ("a = 1", "not a valid expression"),
    ("a; b", "not a valid expression"),
])
def test_rules_outside_the_language_are_refused(rule, words):
    with pytest.raises(RuleError, match=None) as caught:
        compile_rule(rule, NAMES)
    assert words in str(caught.value)


def test_arithmetic_on_strings_is_refused_when_evaluated():
    rule = compile_rule("s * 1000000 == s", NAMES)
    with pytest.raises(TypeError, match="numbers"):
        rule({"s": "x"})
    with pytest.raises(TypeError, match="numbers"):
        compile_rule("-s == s", NAMES)({"s": "x"})
