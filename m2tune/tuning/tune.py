"""`m2tune tune`: one Optuna study per (kernel, shape, GPU), run by one worker per slot.

A study is named after what it tunes (`m2rnn_fwd/paper-7b/nvidia-h200/gpu`) and lives in an
Optuna storage (SQLite file by default, any RDB URL, PostgreSQL for several hosts). Every slot
(a GPU of --gpus, or the CPU worker of the model backend) runs its own loop:

    ask (budget left?) -> config (space defaults filled in)
        -> same params scored by a trial of any process?  reuse that score (duplicate, nothing re-run);
           being scored by an earlier one?  wait for it, then the same
        -> space constraints -> variant check(); rejected: a feasible candidate near it enqueued (repair.py)
        -> model says far slower than the best so far?  pruned (GPU backend, --prune)
        -> worker: validate, time (gpu) / interpreter check + model score (model)
        -> tell: COMPLETE with the value, or FAIL with the failure category

The budget (--trials trials run: candidates rejected before compiling or pruned by the model are
recorded but free, duplicates are answered from the storage; a study made before that rule runs
more on resume, as its rejected trials stop counting) and the duplicate check are read from
the storage, so processes and hosts sharing one study together run exactly --trials trials and
no candidate twice. Each trial records its category, errors vs float64, timings or prediction,
compiled resources, the GPU's clock and temperature, and the host and process that ran it. A
killed run resumes: trials left RUNNING by a dead process of this host are failed (user attribute
`orphaned`) and their parameters enqueued again, and other hosts' orphans are caught by the
storage heartbeat (storage.py); completed trials are in the storage already, and their
parameters are never run again.
With the GPU backend a confirm stage re-times the top few and the default config interleaved,
in fresh inputs, and picks the winner by the median over rounds.
"""
from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from .. import status, variants
from ..problem import KernelConfig
from ..status import DUPLICATE, FREE, PRUNED, scored, spends_budget
from . import samplers, shipped
from .backends import NAMES, Outcome, model_config
from .duplicates import UNDECIDED, decided_by
from .options import Progress, TuneError, TuneOptions, hardware_for, study_name
from .orphans import Reaper
from .repair import FAILURES_LIMIT, held, reasons, repair
from .slots import Slots
from .space import problem_for
from .space_file import load_space
from .storage import Heartbeat, open_storage, quiet

# A config its space's rules or the template's check() reject is told COMPLETE with this value rather
# than FAIL: samplers ignore failed trials, so TPE kept proposing the same impossible corners (90% of
# backward proposals in the first studies). Summaries, exports, pruning, confirm read status ok only.
INVALID_PENALTY_MS = 1e9
CONSECUTIVE_DUPLICATES_LIMIT = 50     # a sampler that only re-proposes scored configs has converged
# Candidates answered without running (status.FREE) do not spend --trials (in the first backward studies 55%
# were rejected configs); a space nearly all invalid still ends: at most FREE_PER_TRIAL per trial asked.
FREE_PER_TRIAL = 10
WAIT_S = 0.5                          # polling while an earlier trial scores the same candidate


class Tuner:
    """One study, its slots, and the bookkeeping they share."""

    def __init__(self, opts: TuneOptions, *, on_progress: Optional[Callable[[Progress], None]] = None) -> None:
        import optuna

        if opts.backend not in NAMES:
            raise TuneError(f"unknown backend {opts.backend!r}; known: {', '.join(NAMES)}")
        self.opts = opts
        for name, spec_ref, kernel_path in opts.extra_variants:
            variants.register(name, spec_ref, kernel_path)
        self.space = load_space(opts.space or opts.variant)
        if self.space.variant != opts.variant:
            raise TuneError(f"search space {self.space.source} is for {self.space.variant}, not {opts.variant}")
        self.spec = variants.spec(opts.variant)
        self.problem = problem_for(self.space, opts.shape)
        self.hw = hardware_for(opts, required=opts.backend in ("model", "replay"))
        self.grid = None
        if opts.backend == "replay":
            from .replay import grid_for
            self.grid = grid_for(opts, self.problem)
        if opts.backend == "gpu":
            from ..gpu import gpu_info
            info = gpu_info()
            if info is None:
                raise TuneError("the gpu backend needs a CUDA GPU; without one use --backend model --target SLUG")
            self.gpu_slug, self.gpu_name = info.slug, info.name
        else:
            self.gpu_slug, self.gpu_name = self.hw.slug, self.hw.name
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name = study_name(opts, self.gpu_slug)
        sampler = samplers.per_trial(opts.sampler, seed=opts.seed, grid=self.space.grid_values())
        with quiet():
            self.storage = open_storage(opts.storage)
            self.study = optuna.create_study(study_name=self.name, storage=self.storage, sampler=sampler,
                                             direction="minimize", load_if_exists=True)
        self.distributions = self.space.distributions()
        self.lock = threading.Lock()
        self.progress = Progress()
        self.on_progress = on_progress
        self._best_config: Optional[KernelConfig] = None
        self._duplicates_in_a_row = 0
        self._repairs_failed_in_a_row = 0
        self.stop_reason: Optional[str] = None    # why the loop ended before --trials ran, if it did
        self._deadline: Optional[float] = None    # time.time() after which no trial is asked (budget_s)
        self.reaper = Reaper(self.study, self.storage)
        self._prepare_study()

    # ---- study set-up and resumption

    def _prepare_study(self) -> None:
        from ..gpu import environment
        attrs = self.study.user_attrs
        identity = {"variant": self.opts.variant, "shape": self.opts.shape, "backend": self.opts.backend,
                    "problem": self.problem.describe(), "gpu": self.gpu_slug}
        if "identity" in attrs and attrs["identity"] != identity:
            raise TuneError(f"study {self.name!r} in {self.opts.storage} tunes {attrs['identity']}, "
                            f"not {identity}: pick another --study name")
        if "identity" not in attrs:
            self.study.set_user_attr("identity", identity)
            self.study.set_user_attr("gpu_name", self.gpu_name)
            self.study.set_user_attr("variant_hash", variants.source_hash(self.opts.variant))
            self.study.set_user_attr("environment", _jsonable(environment()))
            self.study.set_user_attr("space", str(self.space.source))
        self.reaper.reap()
        # every run: the default, the configs the profiles ship for this bucket (shipped.py), then the
        # space file's starting points (one added later is tried on resume); none tried twice
        starts = [(p, None) for p in self.space.starting_points()]
        if self.opts.shipped_starts:
            starts[1:1] = shipped.points(self.opts.variant, self.gpu_slug, self.problem, self.space)
        for params, origin in starts:
            searched = {k: v for k, v in params.items() if k in self.distributions}
            self.study.enqueue_trial(searched, user_attrs=origin and {"start": origin}, skip_if_exists=True)
        trials = self.study.get_trials(deepcopy=False)
        done = [t for t in trials if scored(t)]
        self.progress.done = sum(1 for t in done if spends_budget(t))
        self.progress.categories.update(t.user_attrs["status"] for t in done)
        ok = [t for t in done if t.user_attrs["status"] == status.OK and t.value is not None]
        if ok:
            best = min(ok, key=lambda t: t.value)
            self.progress.best_ms, self._best_config = best.value, self.space.config(best.params)

    # ---- the loop

    def _budget_left(self) -> bool:
        """Trials run by every process sharing the study, plus the ones running, against --trials
        (and the free answers against FREE_PER_TRIAL x --trials)."""
        import optuna
        if self.reaper.due():
            self.reaper.reap()              # a dead worker's trial must not hold the budget forever
        trials = self.study.get_trials(deepcopy=False)
        self.progress.done = sum(1 for t in trials if spends_budget(t))
        free = sum(1 for t in trials if scored(t) and not spends_budget(t))
        running = sum(1 for t in trials if t.state == optuna.trial.TrialState.RUNNING)
        stops = ((lambda: self.progress.done + running >= self.opts.trials, None),
                 (lambda: self._deadline is not None and time.time() >= self._deadline,
                  f"stopped at the time budget ({self.opts.budget_s} s): the study resumes where it stopped"),
                 (lambda: free >= FREE_PER_TRIAL * self.opts.trials,
                  f"stopped after {free} candidates rejected or pruned before running (the cap is "
                  f"{FREE_PER_TRIAL} per trial asked): the space hardly fits this problem"),
                 (lambda: self._duplicates_in_a_row >= CONSECUTIVE_DUPLICATES_LIMIT,
                  f"stopped: the sampler proposed {CONSECUTIVE_DUPLICATES_LIMIT} scored candidates in a row"),
                 (lambda: self.study.sampler.exhausted(self.study), "stopped: the search space is exhausted"))
        for stop, reason in stops:
            if stop():
                self.stop_reason = reason
                return False
        return True

    def _ask(self):
        """A new trial with its owner recorded, or None when the budget is spent."""
        import optuna
        with self.lock:
            while self._budget_left():
                with quiet():
                    trial = self.study.ask(self.distributions)
                try:
                    trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
                except optuna.exceptions.UpdateFinishedTrialError:
                    # a retried trial still carrying its dead owner was reaped while we asked
                    # for it; the reaper enqueued its candidate again
                    continue
                return trial
        return None

    def run_slot(self, evaluator, precompiler=None, lookahead: int = 0) -> None:
        """Ask, screen and score trials until the budget is spent.

        With a precompiler, up to `lookahead` screened trials wait ahead of the one being scored,
        their kernels compiling in other processes meanwhile (the GPU stays busy timing). A trial
        whose candidate an earlier trial may still score waits in line undecided (not compiled):
        it is settled when its turn comes, once that earlier trial is done.
        """
        pending: deque = deque()
        while True:
            while len(pending) <= lookahead:
                trial = self._ask()
                if trial is None:
                    break
                beat = Heartbeat(self.storage, trial._trial_id)
                config = self._screen(trial)
                if config is None:
                    beat.stop()
                    continue
                compiling = (precompiler.submit(self.problem, config)
                             if precompiler is not None and config is not UNDECIDED else None)
                pending.append((trial, config, beat, compiling))
            if not pending:
                return
            trial, config, beat, compiling = pending.popleft()
            try:
                if config is UNDECIDED:
                    config = self._screen(trial, wait=True)
                    if config is None:
                        continue
                if compiling:
                    concurrent.futures.wait(compiling, timeout=self.opts.trial_timeout_s)
                self._evaluate(trial, config, evaluator)
            finally:
                beat.stop()

    def _screen(self, trial, *, wait: bool = False):
        """The trial's config if it needs scoring; None when it was told here (over budget, duplicate,
        invalid, pruned); UNDECIDED while an earlier trial may still score the same candidate, or,
        with wait, waits until that trial is done.

        Who scores a candidate is decided from the storage, so it holds across processes and hosts:
        the lowest-numbered trial with those params that is not itself a duplicate. A later trial
        waits for it, then records a duplicate of its outcome. An earlier trial still inside
        study.ask (no owner yet, params not all set) may turn out to be one, so it is waited for too.
        """
        import optuna
        params = dict(trial.params)
        config = self.space.config(params)
        trial.set_user_attr("config", config.as_dict())
        trial.set_user_attr("backend", self.opts.backend)
        trials = self.study.get_trials(deepcopy=False)
        if not wait and self._over_budget(trial, trials):
            return None
        while (earlier := decided_by(trial, trials)) is UNDECIDED:
            if not wait:
                return UNDECIDED
            time.sleep(WAIT_S)
            if self.reaper.due():
                with self.lock:
                    self.reaper.reap()      # the trial waited for may belong to a dead process
            trials = self.study.get_trials(deepcopy=False)
        if earlier is not None:
            category = earlier.user_attrs["status"]
            trial.set_user_attr("duplicate_of", earlier.number)
            trial.set_user_attr("duplicate_status", category)
            copied = earlier.value if category in (status.OK, status.INVALID_CONFIG) else None
            self._tell(trial, copied, DUPLICATE, params, count=False)
            return None
        why = reasons(self.space, self.spec, self.problem, params)
        if why:
            trial.set_user_attr("message", "; ".join(why))
            self._repair(trial, params, trials)
            self._tell(trial, INVALID_PENALTY_MS, status.INVALID_CONFIG, params)
            return None
        if self._pruned(trial, config):
            self._tell(trial, None, PRUNED, params, state=optuna.trial.TrialState.PRUNED)
            return None
        return config

    def _repair(self, trial, params: dict, trials: list) -> None:
        """Enqueue a feasible candidate near the rejected `params` that none of `trials` (as _screen read
        them) holds, as `repaired_to` (else why none as `repair`). Never raises: the study goes on."""
        fixed, note = None, f"not tried: the last {FAILURES_LIMIT} repairs found nothing"
        if self._repairs_failed_in_a_row < FAILURES_LIMIT:
            try:
                fixed = repair(self.space, self.spec, self.problem, params,
                               seed=samplers.trial_seed(self.opts.seed, trial.number),
                               exclude=held(trials, self.distributions))
                if fixed is not None:   # repair_of: which rejected trial it stands in for
                    self.study.enqueue_trial(fixed, user_attrs={"repair_of": trial.number}, skip_if_exists=True)
                note = None if fixed is not None else "no feasible candidate found near it or at random"
            except Exception as exc:    # recorded, and the study goes on
                fixed, note = None, f"failed: {type(exc).__name__}: {exc}"
            self._repairs_failed_in_a_row = 0 if fixed is not None else self._repairs_failed_in_a_row + 1
        trial.set_user_attr("repaired_to", fixed)
        if note:
            trial.set_user_attr("repair", note)

    def _over_budget(self, trial, trials: list) -> bool:
        """Processes sharing the study may each ask for the last trial of the budget at once: the
        one asked first (lowest number) keeps it. The others end theirs unscored, without a
        status, and a candidate that came from the queue goes back into it."""
        import optuna
        running = optuna.trial.TrialState.RUNNING
        ahead = sum(1 for t in trials if spends_budget(t) or (t.state == running and t.number < trial.number))
        if ahead < self.opts.trials:
            return False
        trial.set_user_attr("message", "not run: the study's budget was taken by other workers' trials")
        with self.lock:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        mine = next((t for t in trials if t.number == trial.number), None)
        if mine is not None and ("fixed_params" in mine.system_attrs or "failed_trial" in mine.system_attrs):
            self.study.enqueue_trial(dict(trial.params), skip_if_exists=False)
        return True

    def _evaluate(self, trial, config: KernelConfig, evaluator) -> None:
        t0 = time.time()    # one draw per study: its inputs and references are made once (reuse.py)
        outcome: Outcome = evaluator.evaluate(self.opts.variant, self.problem, config, seed=self.opts.seed)
        for key, value in outcome.result.as_dict().items():
            if value not in (None, {}) and key != "status":
                trial.set_user_attr(key, value)
        for key, value in outcome.attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("predicted", outcome.predicted)
        trial.set_user_attr("trial_s", round(time.time() - t0, 3))
        self._tell(trial, outcome.value, outcome.result.status, dict(trial.params))

    def _pruned(self, trial, config: KernelConfig) -> bool:
        """GPU (and its replay): skip a candidate the model predicts far slower than the best measured one."""
        if not (self.opts.prune and self.opts.backend in ("gpu", "replay") and self.hw is not None):
            return False
        from ..model import perfmodel
        with self.lock:
            best = self._best_config
        if best is None:
            return False
        try:
            mine = perfmodel.predict(self.problem, model_config(config), self.hw).time_ms
            theirs = perfmodel.predict(self.problem, model_config(best), self.hw).time_ms
        except perfmodel.ModelError:
            return False
        trial.set_user_attr("predicted_ms", mine)
        if mine > self.opts.prune_factor * theirs:
            trial.set_user_attr("message", f"predicted {mine:.3f} ms > {self.opts.prune_factor} x "
                                           f"{theirs:.3f} ms predicted for the best so far")
            return True
        return False

    def _tell(self, trial, value: Optional[float], category: str, params: dict, *, count: bool = True,
              state=None) -> None:
        import optuna
        trial.set_user_attr("status", category)
        with self.lock:
            if value is not None:
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=state or optuna.trial.TrialState.FAIL)
            if category != DUPLICATE:
                self._duplicates_in_a_row = 0
            else:
                self._duplicates_in_a_row += 1
            if count:
                self.progress.done += category not in FREE
                self.progress.categories[category] += 1
                if category == status.OK and (self.progress.best_ms is None or value < self.progress.best_ms):
                    self.progress.best_ms = value
                    self._best_config = self.space.config(params)
            if self.on_progress:
                self.on_progress(self.progress)

    # ---- slots

    def _extra(self) -> dict[str, tuple[str, str]]:
        return {name: (spec_ref, kernel) for name, spec_ref, kernel in self.opts.extra_variants}

    def run(self, slots: Optional[Slots] = None) -> dict[str, Any]:
        """Run the study to its budget. slots: workers shared with other studies (slots.py), left
        open; without, the study makes its own and closes them."""
        started = time.time()
        self._deadline = started + self.opts.budget_s if self.opts.budget_s else None
        own = slots is None
        slots = slots if slots is not None else Slots()
        errors: list[BaseException] = []

        def slot(evaluator, precompiler, lookahead: int) -> None:
            try:
                self.run_slot(evaluator, precompiler, lookahead)
            except BaseException as exc:       # re-raised below: a dead slot must not pass for a done one
                errors.append(exc)

        try:
            evaluators = slots.evaluators(self)
            precompiler = slots.precompiler() if self.opts.backend == "gpu" and self.opts.lookahead > 0 else None
            # trials are asked ahead only to compile while another is timed: not without a precompiler
            lookahead = self.opts.lookahead if precompiler is not None else 0
            threads = [threading.Thread(target=slot, args=(e, precompiler, lookahead),
                                        name=f"m2tune-slot-{i}") for i, e in enumerate(evaluators)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            confirm = None
            if self.opts.backend == "gpu" and self.opts.confirm > 0:
                from .confirm import confirm_top
                confirm = confirm_top(self, evaluators[0])
                self.study.set_user_attr("confirm", confirm)
        finally:
            if own:
                slots.close()
        wall = time.time() - started
        self.study.set_user_attr("last_run_s", round(wall, 1))
        from .summary import summarize
        return summarize(self, wall_s=wall, confirm=confirm)


def _jsonable(value: Any) -> Any:
    import json
    return json.loads(json.dumps(value, default=str))
