"""The constraint-rule language of search-space files, compiled without eval.

Literals, names, + - * // % and unary -, comparisons (in / not in a tuple or list), and / or / not,
`x if c else y`, min() and max(). A rule is parsed by `ast`, every node is checked against this
whitelist, and each becomes a closure taking the environment (parameter and problem values by
name). Nothing is ever passed to eval, exec or compile.
"""
from __future__ import annotations

import ast
import operator
from typing import Any, Callable, Mapping, Sequence


class RuleError(ValueError):
    """A constraint rule uses something outside the rule language, or fails when evaluated."""


# ---------------------------------------------------------------------------------------------
# The rule language: literals, names, + - * // % and unary -, comparisons (in / not in a tuple or
# list), and / or / not, `x if c else y`, min() and max(). Each AST node becomes a closure taking
# the environment (parameter and problem values by name).

Env = Mapping[str, Any]
Rule = Callable[[Env], Any]

_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_COMPARISONS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
                ast.Gt: operator.gt, ast.GtE: operator.ge,
                ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_FUNCTIONS = {"min": min, "max": max}
_LITERALS = (int, float, str, bool)
_LANGUAGE = ("literals, names, + - * // %, unary -, comparisons, in / not in (tuple or list), "
             "and / or / not, x if c else y, min(), max()")
# friendlier names for the node types people try most often
_NODE_WORDS = {ast.Attribute: "attribute access", ast.Subscript: "subscripts", ast.Lambda: "lambda",
               ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
               ast.GeneratorExp: "generator expressions", ast.JoinedStr: "f-strings",
               ast.NamedExpr: "assignment expressions", ast.Starred: "starred arguments",
               ast.Tuple: "tuples outside `in`", ast.List: "lists outside `in`", ast.Dict: "dicts",
               ast.Set: "sets", ast.Await: "await", ast.Yield: "yield"}


def compile_rule(text: str, names: Sequence[str]) -> Rule:
    """Check a rule against the language and the known names; return it as a function of an env."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise RuleError(f"not a valid expression ({e.msg})") from None
    return _build(tree.body, frozenset(names))


def _build(node: ast.AST, names: frozenset[str]) -> Rule:
    builder = _BUILDERS.get(type(node))
    if builder is None:
        what = _NODE_WORDS.get(type(node), type(node).__name__)
        raise RuleError(f"{what} not allowed ({ast.unparse(node)!r}); a rule may use {_LANGUAGE}")
    return builder(node, names)


def _constant(node: ast.Constant, names: frozenset[str]) -> Rule:
    value = node.value
    if type(value) not in _LITERALS:
        raise RuleError(f"literal {value!r} not allowed (ints, floats, strings and booleans only)")
    return lambda env: value


def _name(node: ast.Name, names: frozenset[str]) -> Rule:
    key = node.id
    if key.startswith("__"):
        raise RuleError(f"dunder name {key!r} not allowed")
    if key not in names:
        raise RuleError(f"unknown name {key!r} (known: {', '.join(sorted(names))})")
    return lambda env: env[key]


def _number(value: Any) -> Any:
    # arithmetic on strings ('x' * 10**9) would allocate instead of compute: numbers only
    if type(value) not in (int, float, bool):
        raise TypeError(f"arithmetic needs numbers, got {value!r}")
    return value


def _binop(node: ast.BinOp, names: frozenset[str]) -> Rule:
    op = _ARITHMETIC.get(type(node.op))
    if op is None:
        raise RuleError(f"operator {type(node.op).__name__} not allowed ({ast.unparse(node)!r}); "
                        "arithmetic is + - * // %")
    left, right = _build(node.left, names), _build(node.right, names)
    return lambda env: op(_number(left(env)), _number(right(env)))


def _unaryop(node: ast.UnaryOp, names: frozenset[str]) -> Rule:
    operand = _build(node.operand, names)
    if isinstance(node.op, ast.Not):
        return lambda env: not operand(env)
    if isinstance(node.op, ast.USub):
        return lambda env: -_number(operand(env))
    raise RuleError(f"unary {type(node.op).__name__} not allowed ({ast.unparse(node)!r})")


def _boolop(node: ast.BoolOp, names: frozenset[str]) -> Rule:
    parts = [_build(value, names) for value in node.values]
    if isinstance(node.op, ast.And):
        def all_of(env: Env) -> Any:
            result: Any = True
            for part in parts:            # short-circuit like Python: `K > 0 and 64 // K > 1` is safe
                result = part(env)
                if not result:
                    return result
            return result
        return all_of

    def any_of(env: Env) -> Any:
        result: Any = False
        for part in parts:
            result = part(env)
            if result:
                return result
        return result
    return any_of


def _members(node: ast.AST, names: frozenset[str]) -> Rule:
    if not isinstance(node, (ast.Tuple, ast.List)):
        raise RuleError(f"`in` needs a tuple or list literal on its right, got {ast.unparse(node)!r}")
    items = [_build(item, names) for item in node.elts]
    return lambda env: tuple(item(env) for item in items)


def _compare(node: ast.Compare, names: frozenset[str]) -> Rule:
    left = _build(node.left, names)
    steps = []
    for op, right in zip(node.ops, node.comparators):
        if isinstance(op, (ast.In, ast.NotIn)):
            steps.append((_COMPARISONS[type(op)], _members(right, names)))
        elif type(op) in _COMPARISONS:
            steps.append((_COMPARISONS[type(op)], _build(right, names)))
        else:
            raise RuleError(f"comparison {type(op).__name__} not allowed ({ast.unparse(node)!r})")

    def chain(env: Env) -> bool:
        # a < b <= c means a < b and b <= c, each operand evaluated once, stopping at the first False
        a = left(env)
        for compare, right in steps:
            b = right(env)
            if not compare(a, b):
                return False
            a = b
        return True
    return chain


def _ifexp(node: ast.IfExp, names: frozenset[str]) -> Rule:
    test, body, orelse = (_build(n, names) for n in (node.test, node.body, node.orelse))
    return lambda env: body(env) if test(env) else orelse(env)


def _call(node: ast.Call, names: frozenset[str]) -> Rule:
    func = _FUNCTIONS.get(node.func.id) if isinstance(node.func, ast.Name) else None
    if func is None:
        raise RuleError(f"call {ast.unparse(node.func)!r} not allowed; only min() and max() may be called")
    if node.keywords or len(node.args) < 2:
        raise RuleError(f"{ast.unparse(node)!r}: {node.func.id}() takes two or more plain arguments")
    args = [_build(arg, names) for arg in node.args]
    return lambda env: func(arg(env) for arg in args)


_BUILDERS: dict[type, Callable[[Any, frozenset[str]], Rule]] = {
    ast.Constant: _constant, ast.Name: _name, ast.BinOp: _binop, ast.UnaryOp: _unaryop,
    ast.BoolOp: _boolop, ast.Compare: _compare, ast.IfExp: _ifexp, ast.Call: _call,
}
