"""The sharded video database: appending writes only the new rows (committed shards keep their
bytes), opening memory-maps instead of reading, a crash before the manifest commit leaves the
previous database, legacy flat folders (the shipped one included) open as before."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import backend.retrieval.videos.database as database
from backend.retrieval.videos.database import VideoDatabase, live_folder, writer_lock
from backend.retrieval.videos.store import MANIFEST, RowArray

REPO = Path(__file__).resolve().parents[1]
LABELS = ["start", "keypoints written", "object written", "records written",
          "version folder in place", "committed"]


def rows(start: int, n: int):
    """Records and float16-exact arrays of rows start..start+n."""
    rng = np.random.default_rng(start)
    recs = [{"id": f"v{i:04d}", "key": f"k{i:04d}", "source": f"/videos/{i}.mp4", "kind": "file"}
            for i in range(start, start + n)]
    kp = rng.normal(size=(n, 16, 17, 3)).astype(np.float16).astype(np.float32)
    ob = rng.normal(size=(n, 1024)).astype(np.float16).astype(np.float32)
    return recs, kp, ob


def build(root: Path, sizes: list[int], shard_rows: int = 4) -> tuple[list, np.ndarray, np.ndarray]:
    """A database at ``root`` made by a first save and then one append per further size."""
    all_recs, kps, obs, at = [], [], [], 0
    for j, n in enumerate(sizes):
        recs, kp, ob = rows(at, n)
        db = VideoDatabase.open(root)
        assert db.extend(recs, kp, ob) == n
        with writer_lock(root):
            db.save(root, shard_rows=shard_rows)
        all_recs += recs
        kps.append(kp)
        obs.append(ob)
        at += n
    return all_recs, np.concatenate(kps), np.concatenate(obs)


def fingerprint(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_append_round_trip_across_shards(tmp_path):
    root = tmp_path / "db"
    recs, kp, ob = build(root, [6, 5, 1])            # 12 rows in shards of 4: 4 + 4 + 4
    db = VideoDatabase.load(root)
    assert db.sharded and len(db) == 12
    assert db.ids == [r["id"] for r in recs] and db.records == recs
    assert db.keypoints.shape == (12, 16, 17, 3) and db.object.shape == (12, 1024)
    np.testing.assert_array_equal(db.keypoints[:], kp)
    np.testing.assert_array_equal(db.object[:], ob)
    # indexed like an ndarray, float32 out
    for key in (3, -1, slice(2, 9), slice(None, None, 3), [0, 11, 4, 4], np.array([[1, 5], [9, 2]]),
                np.arange(12) % 3 == 0, (slice(1, 3), 0)):
        got = db.keypoints[key]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, kp[key])
    np.testing.assert_array_equal(db.object[db.row("v0007")], ob[7])
    assert db.record("v0010") == recs[10]
    with pytest.raises(IndexError):
        db.keypoints[12]
    # the manifest lists three full shards
    m = json.loads((live_folder(root) / MANIFEST).read_text())
    assert [s["rows"] for s in m["shards"]] == [4, 4, 4] and m["count"] == 12
    # duplicates by key are not added again; ids and keys are found by their hash column
    assert db.present(["k0003", "nope"], "key") == {"k0003"}
    assert db.present(["v0011", "v9999"], "id") == {"v0011"}
    assert db.extend(*rows(3, 2)) == 0


def test_append_leaves_full_shards_untouched(tmp_path):
    root = tmp_path / "db"
    build(root, [9])                                 # shards 000000, 000001 full; 000002 holds 1
    folder = live_folder(root)
    full = [folder / f"{p}-{n}.{ext}" for n in ("000000", "000001")
            for p, ext in (("keypoints", "npy"), ("object", "npy"), ("videos", "jsonl"), ("hashes", "npy"))]
    before = {p: fingerprint(p) for p in full}
    db = VideoDatabase.load(root)
    recs, kp, ob = rows(9, 6)                        # fills 000002 (3 rows) and starts 000003
    db.extend(recs, kp, ob)
    with writer_lock(root):
        db.save()
    assert live_folder(root) == folder               # no new version folder: an append
    assert {p: fingerprint(p) for p in full} == before
    assert (folder / "keypoints-000003.npy").is_file()
    db2 = VideoDatabase.load(root)
    assert len(db2) == 15 and db2.ids[-1] == "v0014"
    np.testing.assert_array_equal(db2.keypoints[9:], kp)
    assert len(db) == 15 and db.sharded              # the saved object now reads the committed rows


def test_open_memory_maps_and_reads_records_lazily(tmp_path):
    root = tmp_path / "db"
    build(root, [10])
    db = VideoDatabase.load(root)
    assert isinstance(db.keypoints, RowArray) and isinstance(db.object, RowArray)
    assert all(isinstance(p, np.memmap) for p in db.keypoints.parts + db.object.parts)
    assert len(db) == 10 and db._store._records is None      # records not read yet
    assert db.present(["k0002"], "key") == {"k0002"}
    assert db.ids[2] == "v0002" and db.row("v0007") == 7
    assert db._store._records is None                         # ids come from the ids column
    assert db.record("v0003")["source"] == "/videos/3.mp4" and db._store._records is not None


def _no_records(monkeypatch):
    """Make reading any record of a sharded database fail."""
    def boom(*a, **k):
        raise AssertionError("the records were parsed")
    import backend.retrieval.videos.store as store
    monkeypatch.setattr(store, "read_shard_records", boom)


def test_ids_and_row_look_ups_read_the_ids_column_only(tmp_path, monkeypatch):
    root = tmp_path / "db"
    recs, _, _ = build(root, [6, 5])                          # shards of 4: 4 + 4 + 3
    folder = live_folder(root)
    m = json.loads((folder / MANIFEST).read_text())
    assert [s["ids"] for s in m["shards"]] == ["ids-000000.npy", "ids-000001.npy", "ids-000002.npy"]
    col = np.load(folder / "ids-000000.npy", mmap_mode="r")
    assert isinstance(col, np.memmap) and col.dtype == np.dtype("S64") and len(col) == 4
    _no_records(monkeypatch)
    db = VideoDatabase.load(root)
    assert db.ids == [r["id"] for r in recs]
    assert db.row("v0009") == 9 and db.present(["v0010", "v0099"], "id") == {"v0010"}
    with pytest.raises(AssertionError, match="parsed"):       # records stay lazy, and really are
        db.records


def test_a_longer_id_widens_only_the_tail_shards_column(tmp_path, monkeypatch):
    root = tmp_path / "db"
    build(root, [6])                                          # shards 4 + 2
    folder = live_folder(root)
    first = fingerprint(folder / "ids-000000.npy")
    recs, kp, ob = rows(6, 3)                                 # row 6 fills shard 1, 7.. start shard 2
    recs[0]["id"] = "long-" + "é" * 60                        # 125 UTF-8 bytes
    db = VideoDatabase.load(root)
    db.extend(recs, kp, ob)
    with writer_lock(root):
        db.save()
    m = json.loads((folder / MANIFEST).read_text())
    assert [s["ids"] for s in m["shards"]] == ["ids-000000.npy", "ids-000001-w125.npy", "ids-000002.npy"]
    assert fingerprint(folder / "ids-000000.npy") == first
    _no_records(monkeypatch)
    assert VideoDatabase.load(root).ids == [f"v{i:04d}" for i in range(6)] + [r["id"] for r in recs]


def test_shards_written_before_the_ids_column_still_read_and_append(tmp_path):
    root = tmp_path / "db"
    recs, _, _ = build(root, [6])
    folder = live_folder(root)
    m = json.loads((folder / MANIFEST).read_text())
    for s in m["shards"]:                                     # the layout of the first sharded format
        (folder / s.pop("ids")).unlink()
    (folder / MANIFEST).write_text(json.dumps(m))
    db = VideoDatabase.load(root)
    assert db.ids == [r["id"] for r in recs]                  # from the records
    more, kp, ob = rows(6, 3)
    db.extend(more, kp, ob)
    with writer_lock(root):
        db.save()
    m = json.loads((folder / MANIFEST).read_text())
    assert "ids" not in m["shards"][0] and m["shards"][1]["ids"] == "ids-000001-w64.npy"
    assert VideoDatabase.load(root).ids == [r["id"] for r in recs + more]


@pytest.mark.parametrize("label", LABELS[1:])
def test_crash_before_the_manifest_commit_keeps_the_previous_database(tmp_path, monkeypatch, label):
    root = tmp_path / "db"
    recs, kp, ob = build(root, [6])
    db = VideoDatabase.load(root)
    db.extend(*rows(6, 5))

    def crash(at):
        if at == label:
            raise RuntimeError(at)
    monkeypatch.setattr(database, "_crash_point", crash)
    with pytest.raises(RuntimeError):
        db.save()
    monkeypatch.setattr(database, "_crash_point", lambda at: None)
    old = VideoDatabase.load(root)
    n = 11 if label == "committed" else 6
    assert len(old) == n and old.ids == [f"v{i:04d}" for i in range(n)]
    np.testing.assert_array_equal(old.keypoints[:6], kp)
    np.testing.assert_array_equal(old.object[:6], ob)
    # the next append overwrites whatever the crashed one left past the committed rows
    again = VideoDatabase.load(root)
    recs2, kp2, ob2 = rows(20, 3)
    again.extend(recs2, kp2, ob2)
    again.save()
    final = VideoDatabase.load(root)
    assert final.ids == old.ids + [r["id"] for r in recs2]
    np.testing.assert_array_equal(final.keypoints[n:], kp2)
    np.testing.assert_array_equal(final.object[n:], ob2)


def test_stale_snapshot_writes_a_new_version(tmp_path):
    """A database object whose folder changed since it was opened does not append onto it."""
    root = tmp_path / "db"
    build(root, [3])
    a, b = VideoDatabase.load(root), VideoDatabase.load(root)
    a.extend(*rows(3, 1))
    a.save()
    b.extend(*rows(10, 1))
    b.save()                                         # last writer wins, as a whole version
    assert VideoDatabase.load(root).ids == ["v0000", "v0001", "v0002", "v0010"]
    assert live_folder(root).name == "v000002"


def test_legacy_versioned_folder_opens_and_moves_to_shards(tmp_path):
    root = tmp_path / "db"
    (root / "v000004").mkdir(parents=True)
    recs, kp, ob = rows(0, 3)
    (root / "v000004" / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    np.save(root / "v000004" / "keypoints.npy", kp.astype(np.float16))
    np.save(root / "v000004" / "object.npy", ob.astype(np.float16))
    (root / "CURRENT").write_text("v000004\n")
    db = VideoDatabase.load(root)
    assert not db.sharded and isinstance(db.keypoints, np.ndarray) and db.keypoints.dtype == np.float32
    assert db.ids == ["v0000", "v0001", "v0002"]
    db.extend(*rows(3, 2))
    with writer_lock(root):
        db.save()
    assert live_folder(root).name == "v000005" and not (root / "v000004").exists()
    db = VideoDatabase.load(root)
    assert db.sharded and len(db) == 5
    np.testing.assert_array_equal(db.keypoints[:3], kp)


def test_shipped_database_opens_unchanged(tmp_path):
    src = REPO / "checkpoints" / "videodb"
    assert (src / "videos.jsonl").is_file(), "checkpoints/videodb (tracked, shipped) is missing"
    stamp = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    db = VideoDatabase.load(src)
    assert not db.sharded and isinstance(db.keypoints, np.ndarray)
    assert db.keypoints.dtype == np.float32 and db.keypoints.shape == (len(db), 16, 17, 3)
    assert db.object.shape == (len(db), 1024) and len(db.ids) == len(set(db.ids)) == len(db)
    # the working copy (what `open_database("embedded")` makes) is sharded and holds the same
    copy = tmp_path / "embedded"
    with writer_lock(copy):
        db.save(copy)
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == stamp
    work = VideoDatabase.load(copy)
    assert work.sharded and work.ids == db.ids and work.records == db.records
    np.testing.assert_array_equal(work.keypoints[:], db.keypoints)
    np.testing.assert_array_equal(work.object[:], db.object)
    # and the flat files written back out (`videos build --ship`) are the shipped layout again
    flat = work.write_flat(tmp_path / "flat")
    assert sorted(p.name for p in flat) == sorted(database.FILES)
    np.testing.assert_array_equal(np.load(tmp_path / "flat" / "keypoints.npy"),
                                  np.load(src / "keypoints.npy"))


def test_empty_and_in_memory_databases_keep_their_arrays(tmp_path):
    recs, kp, ob = rows(0, 2)
    db = VideoDatabase(tmp_path, recs, kp, ob)
    assert db.keypoints is not None and isinstance(db.keypoints, np.ndarray)
    np.testing.assert_array_equal(db.keypoints, kp)
    empty = VideoDatabase.empty(tmp_path / "e")
    empty.save()
    again = VideoDatabase.load(tmp_path / "e")
    assert len(again) == 0 and again.keypoints.shape == (0, 16, 17, 3) and again.ids == []
    shutil.rmtree(tmp_path / "e")
    assert os.listdir(tmp_path) == []
