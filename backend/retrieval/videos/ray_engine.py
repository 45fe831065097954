"""The per-video ingestion map on Ray Data: the distributed engine for paper-scale databases.

``ray_map(map_fn, todo, ...)`` runs ``map_fn(item, order=i)`` for every ``(i, item)`` as a Ray
Data ``map`` over a pool of actors (one per worker CPU; each loads the pose and video models
once, like a process-pool worker) and yields the results as they arrive. Ingestion
(``ingest.run_ingestion(engine="ray")``) has workers return each result as the bytes of its
shard file (``shard_bytes``); the driver writes the shard and later merges, exactly as with the
process pool, so only the driver touches the database folder.

Locally ``ray_map`` starts Ray itself (``ray.init(num_cpus=workers)``) and stops it at the end;
with ``address`` it joins an existing cluster (``ray start --head`` / a KubeRay or cloud
cluster) and leaves it running. On a cluster every node needs this project installed (the same
image) and the videos at the same paths (a shared file system or object-store mount). There is
no cluster layer of ours: scheduling, retries of dead workers and back-pressure are Ray's.
"""
from __future__ import annotations

import logging
import os
import pickle
import sys
from typing import Callable, Iterable, Iterator


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data needs pyarrow: the ray[data] extra)
    except ImportError as exc:
        raise ImportError("--engine ray needs Ray Data: pip install 'ray[data]==2.60.0' "
                          f"(see requirements.txt) ({exc})") from exc
    return ray


class _Mapper:
    """One Ray actor: ``encode(map_fn(item, order=i))`` on rows {"order", "item" (pickled)}."""

    def __init__(self, map_fn: Callable, encode: Callable, init: Callable | None = None):
        if init is not None:
            init()
        self.map_fn, self.encode = map_fn, encode

    def __call__(self, row: dict) -> dict:
        res = self.map_fn(pickle.loads(row["item"]), order=int(row["order"]))
        return {"order": int(row["order"]), "result": self.encode(res)}


def start(workers: int = 1, address: str | None = None) -> bool:
    """Connect to Ray: the cluster at ``address``, else a local instance of ``workers`` CPUs.
    Returns whether this call started it (and should stop it)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        ray.init(address=address, **kw)
    else:                                            # workers import what this process imports
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        ray.init(num_cpus=max(1, workers), runtime_env={"env_vars": {"PYTHONPATH": path}}, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False                 # our tqdm bar counts the videos
    ctx.print_on_execution_start = False
    return True


def ray_map(map_fn: Callable, todo: Iterable[tuple[int, object]], encode: Callable[..., bytes],
            decode: Callable[[bytes], object], init: Callable | None = None, workers: int = 1,
            address: str | None = None) -> Iterator:
    """Yield ``map_fn(item, order=i)`` for every ``(i, item)`` of ``todo`` as they finish,
    computed by Ray Data on ``workers`` actors (on a cluster: ``workers`` actors of one CPU
    each). Results travel as bytes: ``encode`` on the worker, ``decode`` here; ``init()`` runs
    once in each actor. (Ingestion passes ``shard_bytes`` / ``result_from_bytes``.)"""
    todo = list(todo)
    if not todo:
        return
    ray = _ray()
    started = start(workers, address)
    try:
        rows = [{"order": i, "item": pickle.dumps(it)} for i, it in todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))   # one video per block
        ds = ds.map(_Mapper, fn_constructor_args=(map_fn, encode, init), num_cpus=1,
                    compute=ray.data.ActorPoolStrategy(size=max(1, workers)))
        for row in ds.iter_rows():
            yield decode(row["result"])
    finally:
        if started:
            ray.shutdown()


__all__ = ["ray_map", "start"]
