"""The configs the profiles already ship for a study's exact bucket, as starting points.

A re-tune (after a kernel change made the entries stale, or a short all-bucket study) searched
from scratch could end below what the profile already holds: on 2026-12-02 a 20-trial forward
study at paper-7b never tried the shipped config and its export would have replaced a faster
entry (bench/results/2026-12-02-h200-buckets). So a study enqueues the shipped configs of its
bucket first, from every profile folder the runtime reads, stale ones included: a stale entry's
config is what the changed kernel most likely still runs best. A file that cannot be read only
drops its points; it never stops a study.
"""
from __future__ import annotations

from ..profile_file import ProfileFileError, bucket_of, load


def points(kernel: str, gpu_slug: str, problem, space) -> list[tuple[dict, str]]:
    """(searched params, where from) of each shipped config of `kernel` for `problem`'s exact bucket
    on `gpu_slug`: the entry's config and, where it has one, its training config; a parameter the
    entry predates takes the space's default."""
    from ..gpu import canonical_gpu
    from ..runtime import search_folders
    bucket, found = bucket_of(problem), []
    for folder in search_folders():
        path = folder / canonical_gpu(gpu_slug) / f"{kernel}.json"      # the folder the runtime reads
        try:
            if not path.is_file():
                continue
            pf = load(path, strict=False)
        except (ProfileFileError, OSError):
            continue
        for entry in pf.entries:
            if entry.bucket != bucket:
                continue
            training = (entry.raw.get("training") or {}).get("config")
            for config, role in ((entry.config, ""), (training, " training")):
                if not isinstance(config, dict):
                    continue
                searched = {k: config.get(k, space.defaults[k]) for k in space.params}
                # a value the space does not offer (type and step included) is not enqueued
                fits = all(value in space.params[k] for k, value in searched.items())
                if fits and searched not in [p for p, _ in found]:
                    found.append((searched, f"{path}: bucket {entry.name}{role}"))
    return found
