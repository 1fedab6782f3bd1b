"""Search-space files: search_spaces/<name>.yaml read into a space.SearchSpace.

A file names a kernel variant and holds, as data, its params, constraints, enqueue and buckets
(the schema is spelled out at the top of the shipped files). Loading checks everything that can be
checked before a trial runs, and every mistake raises SpaceError naming the file, the line and the
field. Rules are expressions in a small language (rules.py): parsed by `ast`, checked against a
whitelist of node types and names, and turned into closures. Nothing is ever passed to eval, exec
or compile.

Reading a file imports neither Triton nor optuna: a kernel's PARAMS and DEFAULT come from its
plain-Python spec.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .. import variants
from ..problem import DTYPES, SHAPES, Problem, member
from ..resources import data_dir
from .rules import RuleError, compile_rule
from .space import (HEADS, PROBLEM_NAMES, Bucket, Constraint, Param, SearchSpace, SpaceError,
                    problem_env)

_TOP_KEYS = ("variant", "description", "params", "constraints", "enqueue", "buckets")
_BUCKET_KEYS = ("name", "shape", "B", "S", "K", "V", "N", "shared_qk") + HEADS + ("dtype",)


def space_path(name_or_path: str | Path) -> Path:
    """A bare name ("m2rnn_fwd") is a bundled file; anything else is a path used as is."""
    text = str(name_or_path)
    if isinstance(name_or_path, str) and "/" not in text and not text.endswith((".yaml", ".yml")):
        return data_dir("search_spaces") / f"{text}.yaml"
    return Path(name_or_path)


def bundled() -> list[str]:
    """Names of the bundled search spaces (the *_grids.yaml files are bench grids, not spaces)."""
    folder = data_dir("search_spaces")
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.endswith("_grids"))


def variant_params(name: str) -> tuple[dict[str, tuple[Any, ...]], dict[str, Any]]:
    """(PARAMS, DEFAULT as a dict) of a registered kernel, from its spec (no Triton import)."""
    spec = variants.spec(name)
    return {k: tuple(v) for k, v in spec.PARAMS.items()}, spec.DEFAULT.as_dict()


class SpaceFileMissing(FileNotFoundError):
    """No search-space file at the path or bundled name given (the CLI reports it in one line)."""


def load_space(name_or_path: str | Path, *,
               variant_params: Mapping[str, Sequence[Any]] | None = None) -> SearchSpace:
    """Read and check a search-space file.

    `variant_params` stands in for the variant's PARAMS (the first value of each is its default) so a
    space can be checked without importing the template; normally the template is imported.
    """
    path = space_path(name_or_path)
    if not path.is_file():
        raise SpaceFileMissing(f"no search space at {path} (bundled: {', '.join(bundled())})")
    return _Reader(str(path), variant_params).read(path.read_text())


def _show(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _sub(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


class _Reader:
    """Walks the YAML node tree (for line numbers) of one file and builds a SearchSpace."""

    def __init__(self, source: str, params_override: Mapping[str, Sequence[Any]] | None) -> None:
        self.source = source
        self.params_override = params_override
        self.constructor = yaml.constructor.SafeConstructor()

    # -- generic node access ------------------------------------------------------------------

    def error(self, node: yaml.Node, field: str, detail: str) -> SpaceError:
        return SpaceError(self.source, node.start_mark.line + 1, field, detail)

    def mapping(self, node: yaml.Node, field: str, keys: Sequence[str],
                required: Sequence[str] = ()) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Key -> (key node, value node); unknown, duplicate or missing keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, field or "(document)", f"expected a mapping, got {self.kind(node)}")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            name = self.scalar(key, field or "(document)")
            if not isinstance(name, str):
                raise self.error(key, field or "(document)", f"key {name!r} is not a name")
            if name in out:
                raise self.error(key, _sub(field, name), "duplicate key")
            if keys and name not in keys:
                raise self.error(key, _sub(field, name), f"unknown key (expected: {_show(keys)})")
            out[name] = (key, value)
        for name in required:
            if name not in out:
                raise self.error(node, _sub(field, name), "missing")
        return out

    def sequence(self, node: yaml.Node, field: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, field, f"expected a list, got {self.kind(node)}")
        return list(node.value)

    def scalar(self, node: yaml.Node, field: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, field, f"expected a single value, got {self.kind(node)}")
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as e:          # an unknown tag such as !!python/object
            raise self.error(node, field, str(getattr(e, "problem", e))) from None

    def typed(self, node: yaml.Node, field: str, kind: type, what: str) -> Any:
        value = self.scalar(node, field)
        if type(value) is not kind:
            raise self.error(node, field, f"expected {what}, got {value!r}")
        return value

    def text(self, node: yaml.Node, field: str) -> str:
        value = self.typed(node, field, str, "text")
        if not value.strip():
            raise self.error(node, field, "empty")
        return value

    def positive(self, node: yaml.Node, field: str) -> int:
        value = self.typed(node, field, int, "an integer")
        if value < 1:
            raise self.error(node, field, f"must be at least 1, got {value}")
        return value

    @staticmethod
    def kind(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return f"{node.value!r}"

    # -- the file ---------------------------------------------------------------------------

    def read(self, text: str) -> SearchSpace:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 1
            raise SpaceError(self.source, line, "syntax", f"invalid YAML: {e.problem or e}") from None
        except yaml.YAMLError as e:
            raise SpaceError(self.source, 1, "syntax", f"invalid YAML: {e}") from None
        if root is None:
            raise SpaceError(self.source, 1, "(document)", "empty file")
        top = self.mapping(root, "", _TOP_KEYS, required=("variant", "params", "buckets"))

        variant = self.read_variant(top["variant"][1])
        allowed, defaults = self.lookup_params(variant)
        params = self.read_params(top["params"][1], variant, allowed, defaults)
        buckets = self.read_buckets(top["buckets"][1])
        names = (*allowed, *PROBLEM_NAMES)
        constraints = (self.read_constraints(top["constraints"][1], names)
                       if "constraints" in top else ())
        self.try_constraints(constraints, defaults, buckets)
        enqueue = self.read_enqueue(top["enqueue"][1], params, allowed) if "enqueue" in top else ()
        description = self.text(top["description"][1], "description") if "description" in top else ""
        return SearchSpace(source=Path(self.source), variant=variant, params=params, defaults=defaults,
                           constraints=constraints, enqueue=enqueue, buckets=buckets,
                           description=description)

    def read_variant(self, node: yaml.Node) -> str:
        name = self.text(node, "variant")
        if name not in variants.REGISTRY:
            raise self.error(node, "variant", f"unknown variant {name!r} (known: {_show(variants.names())})")
        return name

    def lookup_params(self, variant: str) -> tuple[dict[str, tuple[Any, ...]], dict[str, Any]]:
        if self.params_override is None:
            return variant_params(variant)
        allowed = {k: tuple(v) for k, v in self.params_override.items()}
        return allowed, {k: v[0] for k, v in allowed.items()}

    # -- params -----------------------------------------------------------------------------

    def read_params(self, node: yaml.Node, variant: str, allowed: Mapping[str, tuple[Any, ...]],
                    defaults: Mapping[str, Any]) -> dict[str, Param]:
        entries = self.mapping(node, "params", ())
        if not entries:
            raise self.error(node, "params", "no parameter to search")
        params = {}
        for name, (key, value) in entries.items():
            where = _sub("params", name)
            if name not in allowed:
                raise self.error(key, where, f"unknown parameter of {variant} (known: {_show(allowed)})")
            param = self.read_param(value, where, name, f"{variant}.{name}", allowed[name])
            if defaults[name] not in param:
                # the study tries the default first, and completes enqueued configs with defaults
                raise self.error(value, where, f"must include {variant}'s default {defaults[name]!r}")
            params[name] = param
        return params

    def read_param(self, node: yaml.Node, where: str, name: str, label: str,
                   allowed: tuple[Any, ...]) -> Param:
        spec = self.mapping(node, where, ("choices", "low", "high", "step", "log"))
        if "choices" in spec:
            if len(spec) > 1:
                raise self.error(node, where, "give either choices or low/high, not both")
            return Param(name, choices=self.read_choices(spec["choices"][1], _sub(where, "choices"),
                                                         label, allowed))
        return self.read_range(node, spec, where, name, label, allowed)

    def read_choices(self, node: yaml.Node, where: str, label: str, allowed: tuple[Any, ...]) -> tuple:
        items = self.sequence(node, where)
        if not items:
            raise self.error(node, where, "empty")
        values: list[Any] = []
        for item in items:
            value = self.scalar(item, where)
            if not member(value, allowed):
                raise self.error(item, where, f"{value!r} is not an allowed value of {label} "
                                              f"(allowed: {_show(allowed)})")
            if member(value, values):
                raise self.error(item, where, f"{value!r} listed twice")
            values.append(value)
        return tuple(values)

    def read_range(self, node: yaml.Node, spec: dict, where: str, name: str, label: str,
                   allowed: tuple[Any, ...]) -> Param:
        for key in ("low", "high"):
            if key not in spec:
                raise self.error(node, _sub(where, key), "missing (a parameter takes choices or low/high)")
        (_, low_node), (_, high_node) = spec["low"], spec["high"]
        low = self.typed(low_node, _sub(where, "low"), int, "an integer")
        high = self.typed(high_node, _sub(where, "high"), int, "an integer")
        step = self.positive(spec["step"][1], _sub(where, "step")) if "step" in spec else 1
        log = self.typed(spec["log"][1], _sub(where, "log"), bool, "true or false") if "log" in spec else False
        if high < low:
            raise self.error(high_node, _sub(where, "high"), f"{high} is below low={low}")
        if log and "step" in spec:
            # optuna's log-scaled IntDistribution takes step 1 only
            raise self.error(spec["step"][1], _sub(where, "step"), "a log range takes no step")
        if log and low < 1:
            raise self.error(low_node, _sub(where, "low"), f"a log range needs low >= 1, got {low}")
        if (high - low) % step:
            raise self.error(high_node, _sub(where, "high"), f"high - low = {high - low} is not a multiple "
                                                             f"of step {step}")
        param = Param(name, low=low, high=high, step=step, log=log)
        outside = [v for v in param.values() if not member(v, allowed)]
        if outside:
            raise self.error(node, where, f"the range includes {_show(outside)}, which {label} does not "
                                          f"allow (allowed: {_show(allowed)})")
        return param

    # -- constraints ------------------------------------------------------------------------

    def read_constraints(self, node: yaml.Node, names: Sequence[str]) -> tuple[Constraint, ...]:
        out = []
        for i, item in enumerate(self.sequence(node, "constraints")):
            where = _sub("constraints", i)
            spec = self.mapping(item, where, ("rule", "why"), required=("rule", "why"))
            rule_node = spec["rule"][1]
            rule = self.text(rule_node, _sub(where, "rule"))
            why = self.text(spec["why"][1], _sub(where, "why"))
            try:
                evaluate = compile_rule(rule, names)
            except RuleError as e:
                raise self.error(rule_node, _sub(where, "rule"), f"{rule!r}: {e}") from None
            out.append(Constraint(rule, why, self.source, rule_node.start_mark.line + 1,
                                  _sub(where, "rule"), evaluate))
        return tuple(out)

    @staticmethod
    def try_constraints(constraints: Sequence[Constraint], defaults: Mapping[str, Any],
                        buckets: Sequence[Bucket]) -> None:
        """Evaluate every rule at the defaults on every bucket, so a rule that cannot be evaluated
        (a string compared with a number, a division by zero) fails now, not in the middle of a study."""
        for bucket in buckets:
            env = {**defaults, **problem_env(bucket.problem)}
            for constraint in constraints:
                constraint.holds(env)

    # -- enqueue ----------------------------------------------------------------------------

    def read_enqueue(self, node: yaml.Node, params: Mapping[str, Param],
                     allowed: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
        out = []
        for i, item in enumerate(self.sequence(node, "enqueue")):
            where = _sub("enqueue", i)
            entry = {}
            for name, (key, value_node) in self.mapping(item, where, ()).items():
                if name not in params:
                    detail = ("not searched in this space (it stays at its default)" if name in allowed
                              else f"unknown parameter (searched: {_show(params)})")
                    raise self.error(key, _sub(where, name), detail)
                value = self.scalar(value_node, _sub(where, name))
                if value not in params[name]:
                    raise self.error(value_node, _sub(where, name),
                                     f"{value!r} is outside the searched values ({_show(params[name].values())})")
                entry[name] = value
            out.append(entry)
        return tuple(out)

    # -- buckets ----------------------------------------------------------------------------

    def read_buckets(self, node: yaml.Node) -> tuple[Bucket, ...]:
        items = self.sequence(node, "buckets")
        if not items:
            raise self.error(node, "buckets", "no bucket to tune")
        out: list[Bucket] = []
        for i, item in enumerate(items):
            bucket = self.read_bucket(item, _sub("buckets", i))
            if any(b.name == bucket.name for b in out):
                raise self.error(item, _sub(_sub("buckets", i), "name"), f"duplicate bucket name {bucket.name!r}")
            out.append(bucket)
        return tuple(out)

    def read_bucket(self, node: yaml.Node, where: str) -> Bucket:
        spec = self.mapping(node, where, _BUCKET_KEYS, required=("name",))
        name = self.text(spec["name"][1], _sub(where, "name"))
        base, base_node = self.read_base(node, spec, where)
        values: dict[str, Any] = {key: self.positive(spec[key][1], _sub(where, key))
                                  for key in ("B", "S", "K", "V") if key in spec}
        values.update(self.read_heads(spec, where, base, base_node))
        if "dtype" in spec:
            dtype = self.text(spec["dtype"][1], _sub(where, "dtype"))
            if dtype not in DTYPES:
                raise self.error(spec["dtype"][1], _sub(where, "dtype"),
                                 f"unknown dtype {dtype!r} (known: {_show(DTYPES)})")
            values["dtype"] = dtype
        try:
            problem = dataclasses.replace(base, **values) if base is not None else Problem(**values)
        except ValueError as e:                  # whatever Problem itself refuses
            raise self.error(node, where, str(e)) from None
        return Bucket(name, problem)

    def read_base(self, node: yaml.Node, spec: dict, where: str) -> tuple[Problem | None, yaml.Node]:
        """The named shape a bucket starts from (its fields may be overridden), or None."""
        if "shape" not in spec:
            for key in ("B", "S", "K", "V"):
                if key not in spec:
                    raise self.error(node, _sub(where, key), "missing (give it, or a named shape)")
            return None, node
        shape_node = spec["shape"][1]
        shape = self.text(shape_node, _sub(where, "shape"))
        if shape not in SHAPES:
            raise self.error(shape_node, _sub(where, "shape"), f"unknown shape {shape!r} (known: {_show(SHAPES)})")
        return SHAPES[shape], shape_node

    def read_heads(self, spec: dict, where: str, base: Problem | None, base_node: yaml.Node) -> dict[str, int]:
        """Head counts: the base shape's (or 1), then `N` (+ `shared_qk`), then single counts.
        Each must divide the largest, which must equal N when N is given."""
        heads = {head: getattr(base, head) if base is not None else 1 for head in HEADS}
        origin = dict.fromkeys(HEADS, base_node)      # the node each count came from, for the error line
        n = None
        if "N" in spec:
            n_node = spec["N"][1]
            n = self.positive(n_node, _sub(where, "N"))
            shared = (self.typed(spec["shared_qk"][1], _sub(where, "shared_qk"), bool, "true or false")
                      if "shared_qk" in spec else False)
            for head in HEADS:
                heads[head] = 1 if shared and head in ("Nq", "Nk") else n
                origin[head] = n_node
        elif "shared_qk" in spec:
            raise self.error(spec["shared_qk"][0], _sub(where, "shared_qk"), "needs N (the head count)")
        for head in HEADS:
            if head in spec:
                heads[head] = self.positive(spec[head][1], _sub(where, head))
                origin[head] = spec[head][1]
        biggest = max(heads.values())
        if n is not None and biggest != n:
            head = max(heads, key=heads.__getitem__) if biggest > n else "N"
            node = origin[head] if head != "N" else spec["N"][1]
            raise self.error(node, _sub(where, head), f"the largest head count is {biggest}, not N={n}")
        for head, count in heads.items():
            if biggest % count:
                raise self.error(origin[head], _sub(where, head), f"{head}={count} does not divide N={biggest}")
        return heads
