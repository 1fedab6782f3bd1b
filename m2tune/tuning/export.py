"""`m2tune export`: the best validated config of each study into profiles/<gpu>/<kernel>.json.

Per study (one kernel, one shape bucket, one GPU): the confirm stage's winner when there is one
(its median over interleaved rounds, next to the default config's time from the same rounds),
else the best trial; its measured spread, the study's trial count, its name, and the compiled
kernel's registers and shared memory. Studies of the model backend export with measured=false.
When the chosen config may not run in training (its spec's training_reason: a forward whose
products round the state its checkpoints hold), the entry also holds `training`: the study's
fastest validated config that may, which the runtime uses when gradients will be taken.
Provenance (GPU, Triton/torch/m2tune versions, template hash) comes from the study itself, i.e.
from the machine that ran it, not the one exporting; each entry keeps its own versions. Entries
merge into an existing file by bucket, so a profile grows one study at a time (a prediction never
replaces a measured entry; a slower measurement replacing one is said); studies of another
Triton version or template source than the file's cannot be merged (they would make it stale).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from .. import status, variants
from ..coverage import PLAN_VERSION
from ..problem import KernelConfig
from ..profile_file import ProfileFileError, bucket_of, dumps, load


class ExportError(ValueError):
    pass


def study_entry(study) -> tuple[dict[str, Any], dict[str, Any]]:
    """(file header facts, entry) of one finished study."""
    from .space import problem_for
    from .space_file import load_space
    attrs = study.user_attrs
    if "identity" not in attrs:
        raise ExportError(f"study {study.study_name!r} was not made by m2tune tune (no identity)")
    identity = attrs["identity"]
    space = load_space(Path(attrs["space"]).stem if not Path(attrs["space"]).is_file() else attrs["space"])
    name = identity["shape"]
    problem = problem_for(space, name)
    trials = study.get_trials(deepcopy=False)
    scored = [t for t in trials if status.scored(t)]
    ok = [t for t in scored if status.is_ok(t)]
    if not ok:
        raise ExportError(f"study {study.study_name!r} has no validated trial to export")
    best = min(ok, key=lambda t: t.value)
    confirm = attrs.get("confirm") or {}
    winner = confirm.get("winner")
    chosen = best
    if winner:
        # the confirm winner may be the default config with no ok trial of its own (memory tie-break):
        # then its config and time come from the confirm rounds alone
        chosen = next((t for t in ok if t.user_attrs.get("config") == winner["config"]), None)
    measured = identity["backend"] == "gpu"
    attrs_of = chosen.user_attrs if chosen is not None else {}
    entry = {
        "bucket": bucket_of(problem), "name": name,
        "config": winner["config"] if winner else chosen.user_attrs["config"],
        "measured": measured,
        "time_ms": winner["median_ms"] if winner else chosen.value,
        "spread": status.spread_of(attrs_of), "default_ms": confirm.get("default_ms"),
        "trials": len(scored), "study": study.study_name,
        "resources": attrs_of.get("resources"),
        "validated": _validated(attrs_of),
    }
    kernel = identity["variant"]
    spec = variants.spec(kernel)
    if spec.training_reason(KernelConfig.of(kernel, entry["config"])):
        safe = sorted((t for t in ok if spec.training_reason(study_config(kernel, t)) is None),
                      key=lambda t: t.value)
        if safe:
            entry["training"] = {"config": safe[0].user_attrs["config"], "time_ms": safe[0].value,
                                 "spread": status.spread_of(safe[0].user_attrs), "trial": safe[0].number,
                                 "resources": safe[0].user_attrs.get("resources"),
                                 "validated": _validated(safe[0].user_attrs)}
    env = attrs.get("environment", {})
    entry["versions"] = {k: env.get(k) for k in ("triton", "torch", "m2tune")}
    if not measured:
        entry["predicted_for"] = identity["gpu"]
    header = {"kernel": identity["variant"],
              "gpu": {"name": attrs.get("gpu_name", identity["gpu"]), "slug": identity["gpu"],
                      "capability": (env.get("gpu") or {}).get("capability")},
              "versions": {k: env.get(k) for k in ("triton", "torch", "m2tune")},
              "variant_hash": attrs["variant_hash"]}
    return header, entry


def _validated(attrs: dict) -> Optional[dict]:
    """The trial's validation-plan record, without the validator's notes (kept in the study)."""
    record = attrs.get("validated")
    if not isinstance(record, dict):
        return None
    keep = {k: v for k, v in record.items() if k != "notes"}
    if attrs.get("validated_as"):
        keep["as"] = attrs["validated_as"]
    return keep


def study_config(kernel: str, trial) -> KernelConfig:
    return KernelConfig.of(kernel, trial.user_attrs["config"])


def export(storage_url: str, out: Path, *, studies: Optional[Iterable[str]] = None) -> list[Path]:
    """Write/merge one file per (GPU, kernel); returns the files written."""
    import optuna

    from .storage import open_storage, quiet, redacted
    with quiet():
        storage = open_storage(storage_url, create=False)
        known = optuna.get_all_study_names(storage=storage)
    missing = [n for n in studies or () if n not in known]
    if missing:
        raise ExportError(f"no study {', '.join(map(repr, missing))} in {redacted(storage_url)}; "
                          f"it has {', '.join(map(repr, known)) or 'none'}")
    names = list(studies) if studies else known
    if not names:
        raise ExportError(f"no studies in {redacted(storage_url)}")
    files: dict[Path, tuple[dict, dict[tuple, dict]]] = {}
    for name in names:
        with quiet():
            study = optuna.load_study(study_name=name, storage=storage)
        try:
            header, entry = study_entry(study)
        except ExportError as exc:
            if studies:                      # asked for by name: say so
                raise
            print(f"m2tune export: skipping {exc}")
            continue
        path = Path(out) / header["gpu"]["slug"] / f"{header['kernel']}.json"
        if path not in files:
            files[path] = (header, _existing(path, header))
        have_header, entries = files[path]
        if _staleness_key(have_header) != _staleness_key(header):
            raise ExportError(f"{path}: study {name!r} was tuned with Triton {header['versions']['triton']} / "
                              f"template {header['variant_hash']}, the file's entries with Triton "
                              f"{have_header['versions']['triton']} / {have_header['variant_hash']}; "
                              "export it to another folder or re-tune")
        if (entry.get("validated") or {}).get("plan", 0) < PLAN_VERSION:
            print(f"m2tune export: {name}: its winner was validated before plan v{PLAN_VERSION} (h0, clipping, "
                  "packed sequences, chunks); the runtime uses it only for the calls its validation covered. "
                  "`m2tune check --revalidate` proves it on the current plan")
        key = tuple(sorted(entry["bucket"].items()))
        if _keeps(path, entries.get(key), entry):
            continue
        entries[key] = entry
    if not files:
        raise ExportError(f"nothing to export from {redacted(storage_url)}: no study has a validated trial")
    for path, (header, entries) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(header["kernel"], header["gpu"], header["versions"], header["variant_hash"],
                              list(entries.values())))
    return sorted(files)


def _keeps(path: Path, have: Optional[dict], new: dict) -> bool:
    """Whether the file's entry for a bucket stays instead of `new`, the study's: a prediction never
    replaces a measurement (predicted entries are only for GPUs with none); a measurement slower than
    the one it replaces does, the newer study being the one that ran this code last, and it says so:
    two runs' times, not a comparison within one."""
    # `have` passed profile_file.load (time_ms and measured required); `new` is a study_entry
    if not have or not have["measured"]:
        return False
    name = new["name"]
    if not new["measured"]:
        print(f"m2tune export: {path}: bucket {name}: kept the measured entry ({have['time_ms']:.3f} ms, "
              f"study {have.get('study')}); study {new['study']} only predicted it")
        return True
    if new["time_ms"] > have["time_ms"]:
        print(f"m2tune export: {path}: bucket {name}: {new['time_ms']:.3f} ms ({new['trials']} trials, study "
              f"{new['study']}) replaces {have['time_ms']:.3f} ms ({have.get('trials')} trials, study "
              f"{have.get('study')}), measured in another run; a study resumed with the shipped config "
              "as a starting point times both in one")
    return False


def _staleness_key(header: dict) -> tuple:
    # what makes a tuned config stale (runtime.py): the Triton version and the template source.
    # torch and m2tune versions are provenance, kept per entry.
    return header["versions"].get("triton"), header["variant_hash"]


def _existing(path: Path, header: dict) -> dict[tuple, dict]:
    """Entries already in the file (kept unless a study of the same bucket replaces them)."""
    if not path.is_file():
        return {}
    try:
        pf = load(path)
    except ProfileFileError as exc:
        raise ExportError(f"{exc}: fix or remove it before exporting into it") from None
    if _staleness_key({"versions": pf.versions, "variant_hash": pf.variant_hash}) != _staleness_key(header):
        print(f"m2tune export: {path} is stale for these studies (other Triton or template); replacing it")
        return {}
    return {tuple(sorted(e.bucket.items())): e.raw for e in pf.entries}
