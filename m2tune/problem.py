"""Frozen descriptions of one M²RNN problem and one kernel configuration.

Nothing here touches a device or a tensor: a `Problem` is what a tuner, a
validator, a tuned-config file and the runtime lookup all agree on.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclass(frozen=True)
class Problem:
    """Shape of one M²RNN call.

    Fixed-length: tensors are (B, S, ...). Varlen: `seqlens` holds the
    length of every packed sequence, tensors are (1, sum(seqlens), ...),
    B is the number of sequences and S the longest one.
    Each head count divides N = max(Nq, Nk, Nv, Nw, Nf); head n of a tensor
    with Nx heads is n // (N // Nx) (consecutive heads share, GQA-style).
    """

    B: int
    S: int
    K: int
    V: int
    Nq: int = 1
    Nk: int = 1
    Nv: int = 1
    Nw: int = 1
    Nf: int = 1
    dtype: str = "bfloat16"
    seqlens: tuple[int, ...] | None = None
    h0: bool = False

    def __post_init__(self) -> None:
        for name in ("B", "S", "K", "V", "Nq", "Nk", "Nv", "Nw", "Nf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Problem.{name} must be a positive int, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"Problem.dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("Nq", "Nk", "Nv", "Nw", "Nf"):
            if self.N % getattr(self, name):
                raise ValueError(
                    f"Problem.{name}={getattr(self, name)} does not divide N={self.N} "
                    "(every head count must divide the largest)")
        if self.seqlens is not None:
            lens = tuple(self.seqlens)
            if not lens or any((not isinstance(n, int)) or n < 1 for n in lens):
                raise ValueError(f"Problem.seqlens must be positive ints, got {self.seqlens!r}")
            if self.B != len(lens) or self.S != max(lens):
                raise ValueError(
                    f"varlen Problem needs B=len(seqlens)={len(lens)} and S=max(seqlens)={max(lens)}, "
                    f"got B={self.B} S={self.S}; build it with Problem.varlen()")

    @classmethod
    def varlen(cls, seqlens: Iterable[int], **kw: Any) -> "Problem":
        lens = tuple(int(n) for n in seqlens)
        return cls(B=len(lens), S=max(lens), seqlens=lens, **kw)

    @property
    def N(self) -> int:
        return max(self.Nq, self.Nk, self.Nv, self.Nw, self.Nf)

    @property
    def is_varlen(self) -> bool:
        return self.seqlens is not None

    @property
    def tokens(self) -> int:
        """Total time steps summed over sequences."""
        return sum(self.seqlens) if self.seqlens is not None else self.B * self.S

    def with_length(self, S: int) -> "Problem":
        """Same problem at another sequence length (varlen: lengths scaled)."""
        if self.seqlens is None:
            return replace(self, S=S)
        scale = S / self.S
        return Problem.varlen([max(1, round(n * scale)) for n in self.seqlens],
                              **self._heads_and_dims())

    def with_dtype(self, dtype: str) -> "Problem":
        return replace(self, dtype=dtype)

    def _heads_and_dims(self) -> dict[str, Any]:
        return dict(K=self.K, V=self.V, Nq=self.Nq, Nk=self.Nk, Nv=self.Nv, Nw=self.Nw,
                    Nf=self.Nf, dtype=self.dtype, h0=self.h0)

    def describe(self) -> str:
        heads = f"Nq={self.Nq} Nk={self.Nk} Nv={self.Nv} Nw={self.Nw} Nf={self.Nf} (N={self.N})"
        shape = (f"varlen {list(self.seqlens)}" if self.seqlens is not None
                 else f"B={self.B} S={self.S}")
        return f"{shape} K={self.K} V={self.V} {heads} {self.dtype}" + (" h0" if self.h0 else "")


@dataclass(frozen=True)
class KernelConfig:
    """One point of a variant's search space: the variant name and its parameters.

    Parameters are kept as a sorted tuple so configs hash, compare and print
    the same way whatever order they were built in.
    """

    variant: str
    params: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def of(cls, variant: str, params: Mapping[str, Any] | None = None, **kw: Any) -> "KernelConfig":
        merged = dict(params or {}, **kw)
        return cls(variant, tuple(sorted(merged.items())))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def __getitem__(self, name: str) -> Any:
        return self.as_dict()[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.as_dict().get(name, default)

    def with_params(self, **kw: Any) -> "KernelConfig":
        return KernelConfig.of(self.variant, self.as_dict(), **kw)

    def short(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params)


def member(value: Any, allowed: Iterable[Any]) -> bool:
    """`value` is one of `allowed`, type-exact: YAML/JSON `true` must not pass for the int 1, nor
    1.0 for 1 (search-space files, profile files)."""
    return any(type(value) is type(a) and value == a for a in allowed)


# Named shapes. The paper shapes use bf16 and one shared q/k head (Nq = Nk = 1),
# with per-head v, W and forget gate.
SHAPES: dict[str, Problem] = {
    "tiny": Problem(B=2, S=32, K=32, V=16, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, dtype="float32"),
    "small": Problem(B=2, S=256, K=64, V=16, Nq=1, Nk=1, Nv=8, Nw=8, Nf=8),
    "paper-400m": Problem(B=8, S=4096, K=64, V=16, Nq=1, Nk=1, Nv=84, Nw=84, Nf=84),
    "paper-7b": Problem(B=4, S=4096, K=64, V=16, Nq=1, Nk=1, Nv=132, Nw=132, Nf=132),
    "square-64": Problem(B=4, S=4096, K=64, V=64, Nq=16, Nk=16, Nv=16, Nw=16, Nf=16),
}


def shape(name: str) -> Problem:
    """A named shape, or an ad-hoc one written as `B=1,S=16384,K=64,V=16,N=132` (parse_shape)."""
    if "=" in name:
        return parse_shape(name)
    try:
        return SHAPES[name]
    except KeyError:
        raise KeyError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}, or B=..,S=..,K=..,V=..,N=..") from None


AD_HOC_REQUIRED = ("B", "S", "K", "V", "N")
AD_HOC_OPTIONAL = ("Nq", "Nk", "Nv", "Nw", "Nf", "dtype", "shared_qk")


def parse_shape(text: str) -> Problem:
    """An ad-hoc shape: `B=..,S=..,K=..,V=..,N=..` and optionally Nq Nk Nv Nw Nf (default: N for v, W
    and f; q and k one shared head, as in the paper, unless shared_qk=0 gives them N), dtype
    (default bfloat16). Every mistake is a ValueError naming the field."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key or not value:
            raise ValueError(f"shape {text!r}: {part.strip()!r} is not NAME=VALUE")
        if key not in AD_HOC_REQUIRED + AD_HOC_OPTIONAL:
            raise ValueError(f"shape {text!r}: unknown field {key!r} (fields: "
                             f"{', '.join(AD_HOC_REQUIRED + AD_HOC_OPTIONAL)})")
        if key in fields:
            raise ValueError(f"shape {text!r}: {key} given twice")
        fields[key] = value.strip()
    missing = [k for k in AD_HOC_REQUIRED if k not in fields]
    if missing:
        raise ValueError(f"shape {text!r}: missing {', '.join(missing)} (needs {', '.join(AD_HOC_REQUIRED)})")

    def count(key: str) -> int:
        raw = fields[key]
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"shape {text!r}: {key} must be a positive integer, got {raw!r}")
        return int(raw)
    shared = fields.get("shared_qk", "1")
    if shared not in ("0", "1"):
        raise ValueError(f"shape {text!r}: shared_qk must be 0 or 1, got {shared!r}")
    N = count("N")
    heads = {k: (count(k) if k in fields else (1 if k in ("Nq", "Nk") and shared == "1" else N))
             for k in ("Nq", "Nk", "Nv", "Nw", "Nf")}
    if max(heads.values()) != N:
        raise ValueError(f"shape {text!r}: N={N} must be the largest head count, got {heads}")
    try:
        return Problem(B=count("B"), S=count("S"), K=count("K"), V=count("V"), **heads,
                       dtype=fields.get("dtype", "bfloat16"))
    except ValueError as exc:
        raise ValueError(f"shape {text!r}: {exc}") from None


def shape_text(problem: Problem) -> str:
    """The canonical ad-hoc name of a fixed-length problem (parse_shape reads it back)."""
    p = problem
    text = f"B={p.B},S={p.S},K={p.K},V={p.V},N={p.N}"
    extra = {k: getattr(p, k) for k in ("Nq", "Nk") if getattr(p, k) != 1}
    extra.update({k: getattr(p, k) for k in ("Nv", "Nw", "Nf") if getattr(p, k) != p.N})
    text += "".join(f",{k}={v}" for k, v in extra.items())
    return text + (f",dtype={p.dtype}" if p.dtype != "bfloat16" else "")
