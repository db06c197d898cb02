"""Merge jupyter-caches (one per shard) into one that the book build reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def merge_caches(sources: Sequence[str | Path], target: str | Path) -> int:
    """Copy every cached notebook of ``sources`` into ``target``; returns how many.

    Records are matched by the hash of their code, so a notebook executed on another
    machine (another absolute path) is found by the book all the same.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    into = get_cache(str(target))
    copied = 0
    for source in sources:
        path = Path(source)
        if not (path / "global.db").is_file():
            raise FileNotFoundError(f"{path} is not a jupyter-cache (no global.db)")
        cache = get_cache(str(path))
        for record in cache.list_cache_records():
            bundle = cache.get_cache_bundle(record.pk)
            into.cache_notebook_bundle(
                CacheBundleIn(bundle.nb, bundle.record.uri, data=dict(bundle.record.data or {})),
                check_validity=False,
                overwrite=True,
            )
            copied += 1
    return copied
