"""The M²RNN autograd op: `m2rnn(q, k, v, W, f, h0=None, ...) -> (y, h_T)`.

Forward and backward are registered as torch custom ops (`m2tune::m2rnn_fwd`,
`m2tune::m2rnn_bwd`) with fake implementations, so `torch.compile(fullgraph=True)`
traces through them without looking inside. The forward keeps fp32
checkpoints every CKPT steps; the backward recomputes each chunk from its
checkpoint. Kernel configs and the clipping bound cross the op boundary as one
JSON string argument (parsed with json.loads, never evaluated), so nothing is
kept in module state between forward and backward.

Backends: a GPU runs the compiled Triton kernels; without one the same kernels
run in Triton's interpreter when TRITON_INTERPRET=1, otherwise (and for
float64 inputs) the plain reference recurrence is used.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Union

import torch

from . import compile_ahead, runtime, variants
from .gpu import current_gpu
from .inputs import InputError, Inputs, batch_packed, check_tensor, problem_of
from .kernel_variants.m2rnn.naive import m2rnn_reference
from .problem import KernelConfig, Problem

ConfigLike = Union[KernelConfig, Mapping[str, Any], None]
ROLES = ("forward", "backward")


def _kernels_available(device: torch.device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and variants.interpreting())


def choices_for(problem: Problem, config: Any = None, *, gpu: Optional[str] = None,
                interpreter: Optional[bool] = None, training: bool = True,
                clipping: bool = False) -> dict[str, runtime.Choice]:
    """{"forward": Choice, "backward": Choice}: what the op runs `problem` with on GPU `gpu`.

    A config given by the caller (a KernelConfig, or parameters over the default of the role's first
    kernel) is checked and used; otherwise the runtime picks among tuned profiles (runtime.choose).
    training: gradients will be taken, so the forward must write fp32-accurate checkpoints (the
    forward spec's training_reason); without it the fastest validated forward is used.
    clipping: the backward clamps state gradients (a tuned entry must have been validated so).
    """
    interp = variants.interpreting() if interpreter is None else interpreter
    out = {}
    for role in ROLES:
        given = (config or {}).get(role)
        if given is None:
            out[role] = runtime.choose(role, problem, gpu=gpu, interpreter=interp, training=training,
                                       clipping=clipping)
            continue
        if isinstance(given, KernelConfig):
            spec = variants.spec(given.variant)
            chosen = given
        else:
            spec = variants.spec(variants.for_role(role)[0])
            chosen = spec.fit(spec.DEFAULT, problem).with_params(**dict(given))
        reason = spec.check(problem, chosen, interpreter=interp)
        if reason:
            raise ValueError(f"m2rnn: `config` for {spec.name} cannot run {problem.describe()}: {reason}")
        out[role] = runtime.Choice(spec.name, chosen, "config argument", "given by the caller", gpu)
    return out


def configs_for(problem: Problem, config: Any = None, *, gpu: Optional[str] = None,
                interpreter: Optional[bool] = None, training: bool = True,
                clipping: bool = False) -> tuple[KernelConfig, KernelConfig]:
    """(forward, backward) configs of choices_for."""
    c = choices_for(problem, config, gpu=gpu, interpreter=interpreter, training=training, clipping=clipping)
    return c["forward"].config, c["backward"].config


def _config_json(config: KernelConfig) -> dict[str, Any]:
    return {"variant": config.variant, "params": config.as_dict()}


def _config_of(data: Mapping[str, Any]) -> KernelConfig:
    return KernelConfig.of(data["variant"], data["params"])


def _plan_json(forward: KernelConfig, backward: KernelConfig, clip: float, training: bool) -> str:
    """Everything the op needs besides tensors, as one string argument of the forward op."""
    return json.dumps({"forward": _config_json(forward), "backward": _config_json(backward), "clip": clip,
                       "training": training}, sort_keys=True)


def _dynamic_plan_json(config: Any, clip: float, training: bool) -> str:
    """The plan of a traced call: the configs are looked up inside the op, at run time, for the
    concrete sizes (_configs); the caller's config overrides travel along."""
    given = None
    if config:
        given = {role: (_config_json(c) if isinstance(c, KernelConfig) else {"params": dict(c)})
                 for role, c in config.items() if c is not None}
    return json.dumps({"dynamic": given, "clip": clip, "training": training}, sort_keys=True)


def _configs(plan: Mapping[str, Any], problem: Problem, device: torch.device) -> tuple[KernelConfig, KernelConfig]:
    """(forward, backward) configs of a call from its parsed plan: as planned, or for a dynamic plan
    looked up now, for the concrete problem (the same lookup the forward and the backward op make,
    so they agree)."""
    if "dynamic" not in plan:
        return _config_of(plan["forward"]), _config_of(plan["backward"])
    given = {role: (_config_of(c) if "variant" in c else c["params"]) for role, c in (plan["dynamic"] or {}).items()}
    gpu = current_gpu() if device.type == "cuda" else None
    return configs_for(problem, given or None, gpu=gpu, training=plan["training"], clipping=plan["clip"] > 0)


def _compile_key(plan: str, problem: Problem) -> str:
    return f"{plan}|{problem.describe()}"


def _compile_backward_ahead(plan: str, data: Mapping[str, Any], config: KernelConfig, problem: Problem,
                            x: Inputs, ckpt_shape: tuple) -> None:
    """Training on a GPU: compile the backward kernel (`config`, from the parsed plan `data`) in a
    background thread while the forward compiles and runs (m2tune/compile_ahead.py); its arguments
    are meta tensors of the same shapes."""
    if not data["training"] or x.q.device.type != "cuda" or variants.interpreting():
        return
    meta = Inputs(*(None if t is None else torch.empty_like(t, device="meta")
                    for t in (x.q, x.k, x.v, x.W, x.f, x.h0, x.cu_seqlens)))
    device = x.q.device
    lead = x.q.shape[:2]

    def compile_backward() -> None:
        dy = torch.empty((*lead, problem.N, problem.V), dtype=x.q.dtype, device="meta")
        dh_T = torch.empty((problem.B, problem.N, problem.K, problem.V), dtype=torch.float32, device="meta")
        ckpt = torch.empty(ckpt_shape, dtype=torch.float32, device="meta")
        clip = data["clip"] if data["clip"] > 0 else None
        with torch.cuda.device(device):
            variants.load(config.variant).launch_backward(problem, config, meta, ckpt, dy, dh_T,
                                                          gradient_clipping=clip, compile_only=True)
    compile_ahead.start(_compile_key(plan, problem), compile_backward)


def _y_shape(v: torch.Tensor, N: int) -> tuple[int, ...]:
    return (v.shape[0], v.shape[1], N, v.shape[3])


def _heads(q, k, v, W, f) -> int:
    return max(q.shape[2], k.shape[2], v.shape[2], W.shape[0], f.shape[2])


@torch.library.custom_op("m2tune::m2rnn_fwd", mutates_args=())
def _fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, W: torch.Tensor, f: torch.Tensor,
         h0: Optional[torch.Tensor], cu_seqlens: Optional[torch.Tensor], plan: str,
         ckpt_every: int, n_seq: int, n_chunks: int, max_seqlen: int
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # max_seqlen (packed calls; 0: not given): with it nothing here reads cu_seqlens on the host,
    # which a CUDA-graph capture (mode="reduce-overhead") forbids
    x = Inputs(q, k, v, W, f, h0, cu_seqlens)
    problem = problem_of(x, max_seqlen)
    data = json.loads(plan)
    config, bwd_config = _configs(data, problem, q.device)
    # the chunk is the backward's CKPT (for a traced call chosen just now); the fake of a traced
    # call promised a chunk count decided here (ckpt_every 0), an eager call cdiv(S, CKPT)
    ckpt_every = bwd_config["CKPT"]
    y = torch.empty(_y_shape(v, problem.N), dtype=q.dtype, device=q.device)
    h_T = torch.empty(problem.B, problem.N, problem.K, problem.V, dtype=torch.float32, device=q.device)
    chunks = -(-problem.S // ckpt_every)
    _compile_backward_ahead(plan, data, bwd_config, problem, x, (n_seq, problem.N, chunks, problem.K, problem.V))
    ckpt = variants.load(config.variant).launch(problem, config, x, y, h_T, ckpt_every=ckpt_every)
    if not n_chunks and chunks < 2:
        ckpt = torch.cat([ckpt, ckpt], dim=2)   # a traced call's promise: at least 2 chunks (_fwd_fake)
    return y, h_T, ckpt


@_fwd.register_fake
def _fwd_fake(q, k, v, W, f, h0, cu_seqlens, plan, ckpt_every, n_seq, n_chunks, max_seqlen):
    N = _heads(q, k, v, W, f)
    K, V = q.shape[3], v.shape[3]
    if not ckpt_every:             # traced: the chunk count is cdiv(S, CKPT) of the op's own lookup
        # at least 2 (the op pads a one-chunk call): inductor's CUDA-graph path compares the strides
        # of saved tensors and cannot tell a chunk count that might be 1 from one that is not
        static = _static_chunks(q, k, v, W, f, h0, cu_seqlens, plan, max_seqlen)
        n_chunks = max(2, static) if static else torch.library.get_ctx().new_dynamic_size(min=2)
    return (q.new_empty(_y_shape(v, N)),
            q.new_empty((n_seq, N, K, V), dtype=torch.float32),
            q.new_empty((n_seq, N, n_chunks, K, V), dtype=torch.float32))


def _static_chunks(q, k, v, W, f, h0, cu_seqlens, plan: str, max_seqlen: int) -> int:
    """The chunk count the op will choose, where the traced sizes are all static (0 where any is
    symbolic, or a packed call's longest sequence is not given): the same lookup the op makes when
    it runs, for the same sizes. A size the graph knows is one inductor's CUDA graphs
    (mode="reduce-overhead") can hold; an unbacked one makes it run the op outside its memory pool."""
    tensors = (q, k, v, W, f, h0, cu_seqlens)
    if any(isinstance(d, torch.SymInt) for t in tensors if t is not None for d in t.shape):
        return 0
    if cu_seqlens is not None and not max_seqlen:
        return 0
    problem = problem_of(Inputs(*tensors), max_seqlen)
    ckpt_every = _configs(json.loads(plan), problem, q.device)[1]["CKPT"]
    return -(-problem.S // ckpt_every)


@torch.library.custom_op("m2tune::m2rnn_bwd", mutates_args=())
def _bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, W: torch.Tensor, f: torch.Tensor,
         h0: Optional[torch.Tensor], cu_seqlens: Optional[torch.Tensor], ckpt: torch.Tensor,
         dy: torch.Tensor, dh_T: torch.Tensor, gradient_clipping: float, plan: str, max_seqlen: int
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x = Inputs(q, k, v, W, f, h0, cu_seqlens)
    problem = problem_of(x, max_seqlen)
    config = _configs(json.loads(plan), problem, q.device)[1]
    clip = gradient_clipping if gradient_clipping > 0 else None
    compile_ahead.wait(_compile_key(plan, problem))     # never compile the same kernel twice
    ckpt = ckpt[:, :, :-(-problem.S // config["CKPT"])]  # a padded one-chunk traced call (_fwd)
    g = variants.load(config.variant).launch_backward(problem, config, x, ckpt, dy.contiguous(),
                                                      dh_T.contiguous(), gradient_clipping=clip)
    dh0 = g["h0"] if h0 is not None else q.new_empty(0)
    return g["q"], g["k"], g["v"], g["W"], g["f"], dh0


@_bwd.register_fake
def _bwd_fake(q, k, v, W, f, h0, cu_seqlens, ckpt, dy, dh_T, gradient_clipping, plan, max_seqlen):
    dh0 = torch.empty_like(h0) if h0 is not None else q.new_empty(0)
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(W),
            torch.empty_like(f), dh0)


def _setup_context(ctx, inputs, output):
    q, k, v, W, f, h0, cu_seqlens, plan, ckpt_every, n_seq, n_chunks, max_seqlen = inputs
    ctx.save_for_backward(q, k, v, W, f, h0, cu_seqlens, output[2])
    ctx.plan, ctx.max_seqlen = plan, max_seqlen
    # the checkpoints are the backward's own input, never differentiated: without these two lines
    # autograd hands the backward a zero gradient of the checkpoints' size (553 MiB at paper-7b with
    # CKPT=16, measured: bench/results/2026-12-01-h200-lean-backward-inline), and of y or h_T when
    # only the other is used
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, dh_T, _dckpt):
    q, k, v, W, f, h0, cu_seqlens, ckpt = ctx.saved_tensors
    clip = json.loads(ctx.plan)["clip"]
    if dy is None:
        dy = torch.zeros(_y_shape(v, _heads(q, k, v, W, f)), dtype=q.dtype, device=q.device)
    if dh_T is None:
        dh_T = torch.zeros(ckpt.shape[0], ckpt.shape[1], ckpt.shape[3], ckpt.shape[4],
                           dtype=torch.float32, device=q.device)
    dq, dk, dv, dW, df, dh0 = torch.ops.m2tune.m2rnn_bwd(
        q, k, v, W, f, h0, cu_seqlens, ckpt, dy, dh_T, clip, ctx.plan, ctx.max_seqlen)
    return dq, dk, dv, dW, df, (dh0 if h0 is not None else None), None, None, None, None, None, None


torch.library.register_autograd("m2tune::m2rnn_fwd", _backward, setup_context=_setup_context)


# the authors' op spells its inputs so (a call ports by changing the import); forget_input is the
# forget gate f in (0, 1), input_state the initial state h0
AUTHORS_NAMES = {"query": "q", "key": "k", "value": "v", "weight": "W", "forget_input": "f",
                 "input_state": "h0"}


def _inputs_by_either_name(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple:
    for alias, name in AUTHORS_NAMES.items():
        if theirs[alias] is not None:
            if ours[name] is not None:
                raise TypeError(f"m2rnn: `{name}` and `{alias}` name the same input: give one")
            ours[name] = theirs[alias]
    for name in ("q", "k", "v", "W", "f"):
        if ours[name] is None:
            alias = next(a for a, n in AUTHORS_NAMES.items() if n == name)
            raise TypeError(f"m2rnn: missing the input `{name}` (or `{alias}`)")
    return tuple(ours.values())


def m2rnn(q: Optional[torch.Tensor] = None, k: Optional[torch.Tensor] = None,
          v: Optional[torch.Tensor] = None, W: Optional[torch.Tensor] = None,
          f: Optional[torch.Tensor] = None, h0: Optional[torch.Tensor] = None, *,
          cu_seqlens: Optional[torch.Tensor] = None, max_seqlen: Optional[int] = None,
          gradient_clipping: Optional[float] = None, config: Optional[Mapping[str, ConfigLike]] = None,
          query: Optional[torch.Tensor] = None, key: Optional[torch.Tensor] = None,
          value: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
          forget_input: Optional[torch.Tensor] = None, input_state: Optional[torch.Tensor] = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """M²RNN recurrence. Returns y (like v, with N heads) and the final state h_T (fp32).

    q (B, S, Nq, K), k (B, S, Nk, K), v (B, S, Nv, V), W (Nw, V, V), f (B, S, Nf), h0 (B, N, K, V).
    Packed sequences: cu_seqlens (num_seqs + 1 offsets) with q, k, v, f as (1, T, ...) or (T, ...)
    (y then comes back in the same layout) and h0 (num_seqs, N, K, V). max_seqlen (optional, as
    in flash-linear-attention): the longest sequence, checked in eager calls. Under torch.compile
    nothing reads sizes or cu_seqlens at trace time: the op looks its configs up when it runs.
    config: {"forward": ..., "backward": ...}, each a KernelConfig or a dict of
    parameters over the template's defaults; None picks defaults for the device.
    query, key, value, weight, forget_input, input_state: the authors' op's names for q, k, v, W,
    f, h0 (either spelling, not both).
    """
    q, k, v, W, f, h0 = _inputs_by_either_name(
        dict(q=q, k=k, v=v, W=W, f=f, h0=h0),
        dict(query=query, key=key, value=value, weight=weight, forget_input=forget_input,
             input_state=input_state))
    for name, t in (("q", q), ("k", k), ("v", v), ("W", W), ("f", f)):
        check_tensor(name, t, "")
    if h0 is not None:
        check_tensor("h0", h0, "(num sequences, N, K, V)")
    (q, k, v, f), packed_3d = batch_packed(q, k, v, f, cu_seqlens)   # (T, N, ...) packed layout
    if gradient_clipping is not None and not gradient_clipping > 0:
        raise ValueError(f"m2rnn: `gradient_clipping` expected a positive bound or None, got {gradient_clipping}")
    clip = float(gradient_clipping) if gradient_clipping is not None else 0.0
    # gradients will flow: the forward's checkpoints must be fp32-accurate (spec training_reason)
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, W, f, h0))
    if max_seqlen is not None and (isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int)
                                   or max_seqlen < 1 or cu_seqlens is None):
        raise ValueError(f"m2rnn: `max_seqlen` expected a positive int with cu_seqlens, got {max_seqlen!r}"
                         + ("" if cu_seqlens is not None else " without cu_seqlens"))
    if torch.compiler.is_compiling():
        # traced: nothing here reads a size or a tensor value (sizes may be symbolic: dynamic=True,
        # mark_dynamic, automatic dynamic; cu_seqlens lives on the device). The op looks its configs
        # up when it runs, for the sizes it gets (_configs), and sizes the checkpoints then.
        use_kernels, plan = _dynamic_plan(q.device.type, str(q.dtype).removeprefix("torch."),
                                          config, clip, training)
        n_seq = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
        ckpt_every, n_chunks, known_seqlen = 0, 0, max_seqlen or 0
    else:
        problem = problem_of(Inputs(q, k, v, W, f, h0, cu_seqlens))   # clear errors, eagerly
        if max_seqlen is not None and max_seqlen < problem.S:
            raise InputError(f"m2rnn: `max_seqlen` expected at least the longest packed sequence, "
                             f"{problem.S} steps, got {max_seqlen}")
        use_kernels, plan, ckpt_every, n_seq, n_chunks = _plan(problem, q.device.type, config, clip, training)
        known_seqlen = problem.S if cu_seqlens is not None else 0     # checked just now: the op reads none
    if not use_kernels:
        if cu_seqlens is not None and torch.compiler.is_compiling():
            # the reference walks the packed sequences in Python: it must read cu_seqlens
            raise NotImplementedError(
                "m2rnn: this packed call runs the PyTorch reference (float64, or no GPU and no Triton "
                "interpreter), which reads cu_seqlens on the host and cannot be traced: call it "
                "outside torch.compile (torch.compiler.disable) or give bf16/fp32 inputs on a GPU")
        y, h_T = m2rnn_reference(q, k, v, W, f, h0, cu_seqlens=cu_seqlens,
                                 gradient_clipping=gradient_clipping)
        return (y.squeeze(0) if packed_3d else y), h_T.float()
    y, h_T, _ = torch.ops.m2tune.m2rnn_fwd(q.contiguous(), k.contiguous(), v.contiguous(),
                                           W.contiguous(), f.contiguous(),
                                           h0.contiguous() if h0 is not None else None,
                                           cu_seqlens, plan, ckpt_every, n_seq, n_chunks, known_seqlen)
    return (y.squeeze(0) if packed_3d else y), h_T


def _plan(problem: Problem, device_type: str, config: Any, clip: float, training: bool):
    """(use kernels?, plan JSON, CKPT, sequences, checkpoint chunks) for one call."""
    kernels = problem.dtype != "float64" and _kernels_available(torch.device(device_type))
    if not kernels:
        return False, "", 0, problem.B, 0
    gpu = current_gpu() if device_type == "cuda" else None
    fwd_config, bwd_config = configs_for(problem, config, gpu=gpu, training=training, clipping=clip > 0)
    ckpt_every = bwd_config["CKPT"]
    return (True, _plan_json(fwd_config, bwd_config, clip, training), ckpt_every, problem.B,
            -(-problem.S // ckpt_every))


@torch._dynamo.assume_constant_result
def _dynamic_plan(device_type: str, dtype: str, config, clip: float, training: bool) -> tuple[bool, str]:
    kernels = dtype != "float64" and _kernels_available(torch.device(device_type))
    return kernels, (_dynamic_plan_json(config, clip, training) if kernels else "")
