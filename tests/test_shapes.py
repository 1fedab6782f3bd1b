"""Ad-hoc shapes (`m2tune tune --shape B=1,S=16384,K=64,V=16,N=132`): parsed, checked, one spelling."""
import pytest

from m2tune.problem import SHAPES, Problem, parse_shape, shape, shape_text
from tests.interpreter import needs_interpreter


def test_defaults_follow_the_paper_shapes():
    assert parse_shape("B=4,S=4096,K=64,V=16,N=132") == SHAPES["paper-7b"]
    assert shape("B=2, S=32, K=32, V=16, N=4, dtype=float32") == SHAPES["tiny"]
    own = parse_shape("B=2,S=64,K=32,V=32,N=8,shared_qk=0,Nv=4")
    assert (own.Nq, own.Nk, own.Nv, own.Nw, own.Nf) == (8, 8, 4, 8, 8)


@pytest.mark.parametrize("problem", [*SHAPES.values(),
                                     Problem(B=3, S=77, K=24, V=12, Nq=2, Nk=4, Nv=8, Nw=8, Nf=1, dtype="float16")])
def test_the_canonical_text_reads_back(problem):
    assert parse_shape(shape_text(problem)) == problem


@pytest.mark.parametrize("text, words", [
    ("B=1,S=64,K=16", "missing V, N"),
    ("B=1,S=0,K=16,V=16,N=2", "S must be a positive integer, got '0'"),
    ("B=1,S=64,K=16,V=16,N=2,X=3", "unknown field 'X'"),
    ("B=1,S=64,K=16,V=16,N=2,B=2", "B given twice"),
    ("B=1,S=64,K=16,V=16,N=3,Nv=2", "Nv=2 does not divide N=3"),
    ("B=1,S=64,K=16,V=16,N=2,Nv=4", "N=2 must be the largest head count"),
    ("B=1,S=64,K=16,V=16,N=2,dtype=int8", "dtype must be one of"),
    ("B=1,S=64,K=16,V=16,N=2,shared_qk=yes", "shared_qk must be 0 or 1"),
    ("B=1,S,K=16,V=16,N=2", "'S' is not NAME=VALUE"),
])
def test_a_bad_shape_names_the_field(text, words):
    with pytest.raises(ValueError) as info:
        parse_shape(text)
    assert words in str(info.value) and text in str(info.value), str(info.value)


@needs_interpreter                     # the model backend checks candidates in the interpreter
def test_an_ad_hoc_shape_is_tuned_and_exported_for_its_own_bucket(tmp_path):
    import json

    from m2tune.profile_file import bucket_of
    from m2tune.tuning.export import export
    from m2tune.tuning.options import TuneOptions
    from m2tune.tuning.tune import Tuner
    storage = f"sqlite:///{tmp_path}/s.db"
    text = shape_text(SHAPES["tiny"])
    tuner = Tuner(TuneOptions(shape=text, backend="model", target="nvidia-h200", trials=1, storage=storage,
                              confirm=0))
    assert tuner.problem == SHAPES["tiny"] and text in tuner.name
    tuner.run()
    (written,) = export(storage, tmp_path / "profiles")
    entry = json.loads(written.read_text())["entries"][0]
    assert entry["bucket"] == bucket_of(SHAPES["tiny"]) and entry["name"] == text


def test_show_and_predict_take_an_ad_hoc_shape():
    from click.testing import CliRunner

    from m2tune.cli import main
    text = "B=1,S=16384,K=64,V=16,N=132"
    shown = CliRunner().invoke(main, ["show", "--shape", text, "--gpu", "nvidia-h200"])
    assert shown.exit_code == 0 and "B=1 S=16384 K=64 V=16" in shown.output, shown.output
    predicted = CliRunner().invoke(main, ["predict", "--shape", text, "--gpu", "nvidia-h200"])
    assert predicted.exit_code == 0 and "predicted for NVIDIA H200" in predicted.output, predicted.output
