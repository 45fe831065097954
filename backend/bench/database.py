"""``python -m backend bench db``: what adding videos costs as the database grows, and what
opening a large one costs in memory.

Append: for each size N a synthetic sharded database of N entries (random float16 arrays, real
records and hash columns, written shard by shard), then ``add`` new videos merged exactly as
``index`` does (per-video shard files -> ``merge``: look-ups, append, manifest commit). The
merge seconds should not grow with N; the ratio largest / smallest says whether they do. With
``rewrite`` it also times writing the whole database as one new version, which is what every
merge cost before the sharded layout.

Open: a synthetic database of ``open_n`` entries whose arrays are left as file holes (zeros:
the bytes' values do not matter to memory mapping) is opened in a fresh process, which reports
its resident memory before and after ``VideoDatabase.load``, after reading 1,000 random rows,
after reading every id (the ids column, not the records), after a row look-up (the id -> row
map) and after parsing every record.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.retrieval.videos.database import (NUM_FRAMES, NUM_JOINTS, OBJECT_DIM, VideoDatabase,
                                               atomic_write_bytes, live_folder, writer_lock)
from backend.retrieval.videos.ingest import IngestResult, merge, write_shard
from backend.retrieval.videos.store import MANIFEST, SHARD_ROWS, Appender, empty_manifest

ROW_BYTES_FLOAT32 = (NUM_FRAMES * NUM_JOINTS * 3 + OBJECT_DIM) * 4   # one row, loaded as before


def _record(i: int) -> dict:
    return {"id": f"syn{i:07d}", "key": f"synkey{i:07d}", "kind": "file",
            "source": f"/bench/videos/{i:07d}.mp4", "fps": 30.0, "n_frames": 90}


def synthetic_database(root: Path, n: int, shard_rows: int = SHARD_ROWS, sparse: bool = False,
                       seed: int = 0, progress: bool = True) -> Path:
    """A committed sharded database of ``n`` entries at ``root`` (written shard by shard; with
    ``sparse`` the arrays are never written, so they read as zeros and take no disk)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    folder = root / "v000001"
    folder.mkdir(parents=True)
    app = Appender(folder, empty_manifest(shard_rows))
    for s in tqdm(range(0, n, shard_rows), desc=f"synthetic database of {n:,}", unit="shard",
                  disable=not progress):
        k = min(shard_rows, n - s)
        if sparse:
            for name, shape in (("keypoints", (NUM_FRAMES, NUM_JOINTS, 3)), ("object", (OBJECT_DIM,))):
                app._open(folder / f"{name}-{s // shard_rows:06d}.npy", 0, np.float16, shape)
        else:
            app.write_array("keypoints", rng.standard_normal((k, NUM_FRAMES, NUM_JOINTS, 3),
                                                             np.float32), offset=s)
            app.write_array("object", rng.standard_normal((k, OBJECT_DIM), np.float32), offset=s)
        app.write_records([_record(i) for i in range(s, s + k)], offset=s)
    if not n:
        app.write_records([])
    atomic_write_bytes(folder / MANIFEST, json.dumps(app.new).encode())
    atomic_write_bytes(root / "CURRENT", b"v000001\n")
    return root


def _new_results(start: int, n: int, seed: int) -> list[IngestResult]:
    rng = np.random.default_rng(seed)
    out = []
    for j, i in enumerate(range(start, start + n)):
        rec = {**_record(i), "id": f"new{i:07d}", "key": f"newkey{i:07d}"}
        out.append(IngestResult(rec["key"], rec["source"], rec,
                                rng.standard_normal((NUM_FRAMES, NUM_JOINTS, 3), np.float32),
                                rng.standard_normal(OBJECT_DIM, np.float32), order=j))
    return out


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix in (".npy", ".jsonl")}


def bench_append(sizes=(10_000, 100_000), add: int = 100, shard_rows: int = SHARD_ROWS,
                 rewrite: bool = False, repeats: int = 3, workdir=None, progress: bool = True) -> dict:
    """Median seconds of merging ``add`` new videos into databases of each size (``repeats``
    merges each), the files each merge wrote, and (``rewrite``) a whole-database write."""
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-db-") as tmp:
        for n in sizes:
            root = synthetic_database(Path(tmp) / f"db{n}", n, shard_rows, progress=progress)
            times, added = [], 0
            for rep in range(repeats):                # each repeat merges ``add`` more videos
                for r in _new_results(n + rep * add, add, seed=n + rep):
                    write_shard(root, r)
                before = _files(live_folder(root))
                t0 = time.perf_counter()
                added += merge(root)[0]
                times.append(time.perf_counter() - t0)
                after = _files(live_folder(root))
            touched = sorted(f for f in after if before.get(f) != after[f])
            merge_s = float(np.median(times))
            row = {"size": n, "added": added, "merge_s": round(merge_s, 4),
                   "merge_ms_per_video": round(1000 * merge_s / max(add, 1), 3),
                   "files_written": len(touched), "files_total": len(after), "touched": touched}
            if rewrite:                               # the old way: the whole database, rewritten
                db = VideoDatabase.load(root)
                t0 = time.perf_counter()
                with writer_lock(Path(tmp) / "rewrite"):
                    db.save(Path(tmp) / "rewrite")
                row["rewrite_s"] = round(time.perf_counter() - t0, 3)
                shutil.rmtree(Path(tmp) / "rewrite")
            rows.append(row)
            shutil.rmtree(root)
    small, large = rows[0], rows[-1]
    return {"add": add, "shard_rows": shard_rows, "repeats": repeats, "sizes": rows,
            "ratio_largest_to_smallest": round(large["merge_s"] / max(small["merge_s"], 1e-9), 3)}


_OPEN_PROBE = textwrap.dedent("""
    import gc, json, sys
    import numpy as np
    from backend.retrieval.videos.database import VideoDatabase

    def rss_mb():
        # (resident, anonymous) MB: mapped file pages count in the first but are page cache
        # the kernel can drop; the anonymous part is this process's own memory.
        vals = {}
        try:
            for line in open("/proc/self/status"):
                if line.startswith(("VmRSS:", "RssAnon:")):
                    vals[line.split(":")[0]] = int(line.split()[1]) / 1024
        except OSError:
            pass
        if "VmRSS" not in vals:
            try:
                import psutil
                return psutil.Process().memory_info().rss / 2**20, float("nan")
            except ImportError:
                import resource
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, float("nan")
        return vals["VmRSS"], vals.get("RssAnon", float("nan"))

    gc.collect()
    out = {"before": rss_mb()}
    db = VideoDatabase.load(sys.argv[1])
    out["entries"] = len(db)
    out["open"] = rss_mb()
    rows = np.random.default_rng(0).choice(len(db), size=min(1000, len(db)), replace=False)
    kp, ob = db.keypoints[rows], db.object[rows]
    out["rows"] = rss_mb()
    ids = db.ids
    out["ids"] = rss_mb()
    row = db.row(ids[-1]) if ids else 0
    out["row"] = rss_mb()
    recs = db.records
    out["records"] = rss_mb()
    print(json.dumps(out))
""")


def bench_open(n: int = 1_000_000, shard_rows: int = SHARD_ROWS, workdir=None, progress: bool = True) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-open-") as tmp:
        root = synthetic_database(Path(tmp) / "db", n, shard_rows, sparse=True, progress=progress)
        proc = subprocess.run([sys.executable, "-c", _OPEN_PROBE, str(root)], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[2], check=False)
    if proc.returncode:
        raise RuntimeError(f"the open probe failed: {proc.stderr.strip()[-2000:]}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    (rss0, anon0) = m["before"]

    def delta(key):
        return {"rss_mb": round(m[key][0] - rss0, 1), "anon_mb": round(m[key][1] - anon0, 1)}

    return {"entries": m["entries"], "shard_rows": shard_rows, "open": delta("open"),
            "open_and_1000_rows": delta("rows"), "open_rows_and_ids": delta("ids"),
            "open_rows_ids_and_row_map": delta("row"), "open_and_every_record": delta("records"),
            "arrays_loaded_as_before_mb": round(n * ROW_BYTES_FLOAT32 / 2**20, 1)}


def format_bench_db(res: dict) -> str:
    lines = []
    if "append" in res:
        a = res["append"]
        lines.append(f"merge of {a['add']} new videos (shards of {a['shard_rows']} rows; median of "
                     f"{a['repeats']} merges; files written by the last one):")
        lines.append(f"{'entries':>12}{'merge s':>10}{'ms/video':>10}{'files written':>15}"
                     + (f"{'full rewrite s':>16}" if "rewrite_s" in a["sizes"][0] else ""))
        for r in a["sizes"]:
            lines.append(f"{r['size']:>12,}{r['merge_s']:>10.3f}{r['merge_ms_per_video']:>10.2f}"
                         f"{str(r['files_written']) + ' of ' + str(r['files_total']):>15}"
                         + (f"{r['rewrite_s']:>16.2f}" if "rewrite_s" in r else ""))
        lines.append(f"merge time, largest / smallest database: {a['ratio_largest_to_smallest']:.2f}x "
                     "(1.0 = does not grow with the database)")
    if "open" in res:
        o = res["open"]
        lines.append(f"opening a database of {o['entries']:,} entries (resident / anonymous MB added):")
        for label, key in (("VideoDatabase.load", "open"), ("+ 1,000 random rows read", "open_and_1000_rows"),
                           ("+ every id (ids column)", "open_rows_and_ids"),
                           ("+ id -> row map (db.row)", "open_rows_ids_and_row_map"),
                           ("+ every record parsed", "open_and_every_record")):
            lines.append(f"  {label:<28}{o[key]['rss_mb']:>10.1f}{o[key]['anon_mb']:>10.1f}")
        lines.append(f"  (loading the arrays as float32, as before: {o['arrays_loaded_as_before_mb']:,.0f} MB; "
                     "resident file pages are page cache the kernel can drop)")
    return "\n".join(lines)


__all__ = ["bench_append", "bench_open", "format_bench_db", "synthetic_database"]
