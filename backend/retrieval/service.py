"""The retrieval service: a trained Gemini-MVR + a video database + its FAISS index.

``VideoRetriever.open()`` gives the embedded default: the database shipped in
``checkpoints/videodb`` (copied on first use to ``data/videodb/embedded``, where user videos can
be added) and the retriever in ``checkpoints/retriever``. Video-side embeddings (``a``, ``o``,
router weights, per-frame action features) are computed once per database row and stored in
``<db>/index/`` (``embcache``: fixed-size shards keyed to the database's rows, appended to when
videos are added, computed again when the retriever's weights change or the database is not an
extension of the rows they were computed from). The FAISS index over the fused vectors is built
from them at open (a flat one is never saved; an HNSW / IVF one from a snapshot, see
``VideoRetriever.refresh``).

Ranking and reading can use two retrievers. The motion LLMs read a video through the per-frame
features of the retriever they were trained with; a better-ranking retriever can replace the
one that searches without retraining them when that reader is kept beside it
(``checkpoints/video-reader``, a ``GeminiMVR`` folder used only for ``video_prior`` /
``prior_arrays``). Without it, the searching retriever is also the reader.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tqdm import tqdm

from backend.checkpoints import checkpoints_dir
from backend.retrieval.embcache import FIELDS, EmbeddingCache
from backend.retrieval.index import FusedIndex, brute_force_fused, fuse_queries, fuse_videos
from backend.retrieval.model import GeminiMVR, encode_captions
from backend.retrieval.rerank import (CHAIN_DEPTH, CHAIN_WEIGHT, PART_VOTES, READ_WEIGHT, RERANK_DEPTH, RERANK_WEIGHT,
                                      agreement, attribute_cues, kind_agreement, merge_cues, part_kind,
                                      video_cues)
from backend.retrieval.rerank import rerank as rerank_order
from backend.retrieval.scene import strip_scene
from backend.retrieval.sides import mirror_for, mirror_keypoints
from backend.retrieval.train import captions_of
from backend.retrieval.videos.database import (DatabaseError, VideoDatabase, VideoFeatures,
                                               database_dir, live_folder, writer_lock)
from backend.retrieval.videos.ingest import index_folder
from motioncore.io import atomic_output
from motioncore.prompt import split_prompts

MODES = ("gemini", "action", "object", "fixed", "random")
READER_DIR = "video-reader"     # under checkpoints/: the retriever whose features the LLMs read
SNAPSHOT_GROWTH = 0.1   # an HNSW / IVF snapshot is saved again once it lacks this share of its rows


@dataclass
class Hit:
    id: str
    rank: int
    score: float            # the score the mode ranks by (fused for gemini)
    action_score: float     # <p, a>
    object_score: float     # <g, o>
    w_action: float         # router weights of this video
    w_object: float
    cues: float = 0.0       # cue agreement that re-ranked it (rerank.py): + agreeing, - disagreeing cues
    kinds: float = 0.0      # share of the query's (parts') kinds it shows, in [-1, 1] (rerank.py): a
    #                         chained query's, or with a kind reader every query's

    def to_json(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def shipped_database_dir() -> Path:
    return checkpoints_dir() / "videodb"


def open_database(name: str = "embedded") -> VideoDatabase:
    """The working copy of database ``name``; ``embedded`` is seeded from the shipped one."""
    root = database_dir(name)
    if name == "embedded" and live_folder(root) is None:
        src = shipped_database_dir()
        if live_folder(src) is None:
            raise DatabaseError("the embedded video database is missing (checkpoints/videodb); "
                                "build it with `python -m backend videos build`")
        with writer_lock(root):                    # one commit; a concurrent first start waits
            if live_folder(root) is None:
                VideoDatabase.load(src).save(root)
    return VideoDatabase.load(root)


@torch.no_grad()
def _encode_one(model: GeminiMVR, keypoints, object_feats) -> dict[str, np.ndarray]:
    kp = torch.as_tensor(np.asarray(keypoints, np.float32))[None]
    ob = torch.as_tensor(np.asarray(object_feats, np.float32))[None]
    return {k: v[0].numpy() for k, v in model.encode_video(kp, ob).items()}


def _model_fingerprint(model: GeminiMVR) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().numpy().tobytes())
    return h.hexdigest()[:16]


class VideoRetriever:
    def __init__(self, model: GeminiMVR, db: VideoDatabase, kind: str = "auto", gpu="auto",
                 minilm=None, progress: bool = False, reader: GeminiMVR | None = None,
                 kind_reader=None):
        self.model = model.eval()
        # reads the kinds the words ask for: an object with read(texts) -> [{kind: probability}]
        # (backend.generation.kind_reader.KindReader; attach one with use_kind_reader)
        self.kind_reader = kind_reader
        self.reader = None if reader is None else reader.eval()   # None: ``model`` reads too
        self.db = db
        self.kind, self.gpu = kind, gpu
        self._minilm = minilm
        self.index_dir = db.root / "index"
        self.fingerprint = _model_fingerprint(model)
        self.emb: dict = {}                      # {"a", "o", "w", "frames"}: RowArrays (memory-mapped)
        self.cache: EmbeddingCache | None = None
        self.index: FusedIndex | None = None
        self.rerank_weight = RERANK_WEIGHT        # cue re-ranking of the top videos (rerank.py); 0 = off
        # queries re-ranked by their (parts') kinds; 0 = off. Without a kind reader only chained
        # queries, by what their parts' best videos show; with one every query, by those and its words
        self.chain_weight = CHAIN_WEIGHT if kind_reader is None else READ_WEIGHT
        self._cues: dict[str, np.ndarray] = {}   # video id -> its captions' attribute codes
        self._kinds: dict[str, frozenset] = {}   # video id -> the kinds its record names
        self.refresh(progress)

    @classmethod
    def open(cls, db: str = "embedded", retriever_dir=None, reader_dir=None, **kw) -> "VideoRetriever":
        """The retriever in ``retriever_dir`` (default ``checkpoints/retriever``) over database
        ``db``; the motion LLMs' reader from ``reader_dir`` (default ``checkpoints/video-reader``
        when the retriever is the shipped one and that folder exists, else the retriever itself).
        No kind reader: it reads with the motion LLM's base, a layer above retrieval, so the
        callers that have one attach it (``kind_reader.with_kind_reader``)."""
        d = Path(retriever_dir or checkpoints_dir() / "retriever")
        if not (d / "model.safetensors").is_file():
            raise FileNotFoundError(f"no trained retriever at {d}; train one with "
                                    "`python -m backend train retriever` and `train router`")
        if reader_dir is None and retriever_dir is None:
            shipped = checkpoints_dir() / READER_DIR
            reader_dir = shipped if (shipped / "model.safetensors").is_file() else None
        if reader_dir is not None and not (Path(reader_dir) / "model.safetensors").is_file():
            raise FileNotFoundError(f"no video reader (a trained retriever) at {reader_dir}")
        reader = GeminiMVR.from_pretrained(reader_dir) if reader_dir is not None else None
        return cls(GeminiMVR.from_pretrained(d), open_database(db), reader=reader, **kw)

    def use_kind_reader(self, reader) -> "VideoRetriever":
        """Read every query's kinds from its words too with ``reader`` (None: from the videos
        alone, chained queries only), with the weight chosen for it (``READ_WEIGHT``)."""
        self.kind_reader = reader
        self.chain_weight = CHAIN_WEIGHT if reader is None else READ_WEIGHT
        return self

    # ------------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def _embed_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"a": [], "o": [], "w": [], "frames": []}
        for s in range(0, len(rows), 256):
            r = rows[s:s + 256]
            v = self.model.encode_video(torch.from_numpy(self.db.keypoints[r]),
                                        torch.from_numpy(self.db.object[r]))
            for k in out:
                out[k].append(v[k].numpy())
        return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}

    @torch.no_grad()
    def _shapes(self) -> dict[str, tuple]:
        """Row shapes of the model's video outputs (one blank video through it)."""
        v = self.model.encode_video(torch.zeros(1, *self.db.keypoints.shape[1:]),
                                    torch.zeros(1, *self.db.object.shape[1:]))
        return {k: tuple(v[k].shape[1:]) for k in FIELDS}

    def refresh(self, progress: bool = False) -> None:
        """Bring the stored embeddings and the index up to date with the database.

        The embedding cache (``embcache``) keeps one row per database row; when it was computed
        by this model from a prefix of this database, only the rows past it go through the model
        and are appended (O(new rows) of model work and bytes written); otherwise it is computed
        again from scratch. The FAISS index is then built from the memory-mapped embeddings: a
        flat one is never saved (filling it is a copy, no model work); an HNSW / IVF one starts
        from its saved snapshot, gets the rows past it with ``add`` and is saved again only once
        the rows it lacks reach ``SNAPSHOT_GROWTH`` of it (an IVF index is trained again only by
        ``retrain_index``)."""
        ids = self.db.ids
        n = len(ids)
        self._read: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row -> reader's (frames, o)
        with writer_lock(self.index_dir):
            cache = EmbeddingCache.open(self.index_dir)
            if cache is None or cache.fingerprint != self.fingerprint or not cache.covers(self.db):
                cache = EmbeddingCache.create(self.index_dir, self.fingerprint, self._shapes(),
                                              shard_rows=self.db.shard_rows)
            if cache.count < n or not cache.live:
                app, base = cache.appender(), cache.count
                step = int(cache.manifest["shard_rows"])
                for s in tqdm(range(base, n, step), desc="embedding videos", unit="shard",
                              disable=not progress):
                    e = min(n, s + step)
                    EmbeddingCache.write(app, self._embed_rows(np.arange(s, e)),
                                         self.db.row_hashes(s, e), offset=s - base)
                cache.commit(app)
            self.cache = cache
            self.emb = cache.arrays()
            self.index = self._build_index(cache, ids)
        self._ids = ids
        self._row = {v: i for i, v in enumerate(ids)}

    def _build_index(self, cache: EmbeddingCache, ids: list[str]) -> FusedIndex:
        """The FAISS index over the cache's rows (see ``refresh``); holds the index lock."""
        n, a, o, w = len(ids), self.emb["a"], self.emb["o"], self.emb["w"]
        index = None
        if cache.snapshot_dir.is_dir():
            try:
                index = FusedIndex.load(cache.snapshot_dir, gpu=self.gpu)
                if index.requested_kind != self.kind or len(index) > n or index.ids != ids[:len(index)]:
                    index = None
            except (OSError, ValueError):
                index = None
        saved = len(index) if index is not None else 0
        if index is None:
            index = FusedIndex(int(a.shape[1] + o.shape[1]), kind=self.kind, gpu=self.gpu)
        if saved < n:                             # one add: a fresh IVF trains on all of it
            index.add(ids[saved:], fuse_videos(a[saved:n], o[saved:n], w[saved:n]))
        if index.kind != "flat" and n - saved >= max(1, SNAPSHOT_GROWTH * saved):
            index.save(cache.snapshot_dir)
        elif index.kind == "flat" and cache.snapshot_dir.is_dir():
            shutil.rmtree(cache.snapshot_dir, ignore_errors=True)
        return index

    def retrain_index(self, nlist: int | None = None) -> None:
        """Train an IVF index again on every stored vector (on request only) and save it."""
        with writer_lock(self.index_dir):
            self.index.retrain(nlist)
            if self.index.kind != "flat" and self.cache.is_current():
                self.index.save(self.cache.snapshot_dir)

    # ---------------------------------------------------------------------------- search
    @torch.no_grad()
    def encode_query(self, texts: list[str]) -> dict[str, np.ndarray]:
        pred, whole = encode_captions(texts, self._minilm)
        t = self.model.encode_text(pred, whole)
        return {"p": t["p"].numpy(), "g": t["g"].numpy()}

    def search(self, text: str, k: int = 5, mode: str = "gemini",
               rng: np.random.Generator | None = None, cues: np.ndarray | None = None,
               want: str | None = None) -> list[Hit]:
        return self.search_many([text], k, mode, rng, None if cues is None else np.asarray(cues)[None],
                                want=None if want is None else [want])[0]

    def search_many(self, texts: list[str], k: int = 5, mode: str = "gemini",
                    rng: np.random.Generator | None = None, cues: np.ndarray | None = None,
                    chain: bool = True, want: list | None = None) -> list[list[Hit]]:
        """The ``k`` best videos per text. ``cues`` (len(texts), 4; ``rerank.stated_cues`` rows):
        what a reading of each text states that its words' cue lists miss, for the re-ranking
        (``rerank.merge_cues``; the words win where they name a group). A text that chains
        motions ("A, then B") has its ``CHAIN_DEPTH`` best videos re-ranked also by the kinds
        its parts' own best videos show (``chain``; ``rerank.kind_agreement``), so a video
        showing every part comes first; with a kind reader every text is, each part's kind read
        from its best videos and its words together. ``want`` (per text, a kind or None): among a
        text's ``CHAIN_DEPTH`` best videos those that show that kind come first (their order and
        the others' kept), e.g. a kind the words read as that the generator knows only from videos
        (``video_lead.video_only_reading``)."""
        if mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}; choose from {', '.join(MODES)}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        n = len(self.db)
        if n == 0:
            raise DatabaseError(f"the video database {self.db.root} is empty")
        k = min(k, n)
        q = self.encode_query(texts)
        a, o, w = self.emb["a"], self.emb["o"], self.emb["w"]
        if mode != "gemini":                      # full-scan modes read every row once
            a_all, o_all = a[:], o[:]
        rerank = bool(self.rerank_weight) and mode != "random"
        depth = min(n, max(k, RERANK_DEPTH)) if rerank else k
        q_cues = attribute_cues(texts) if rerank else None
        if rerank and cues is not None:
            if np.shape(cues) != (len(texts), 4):
                raise ValueError(f"cues must be ({len(texts)}, 4), got {np.shape(cues)}")
            q_cues = merge_cues(q_cues, cues)
        if want is not None and len(want) != len(texts):
            raise ValueError(f"{len(want)} wanted kinds for {len(texts)} texts")
        part_kinds = self._part_kinds(texts, mode) if rerank and chain and self.chain_weight else {}
        out = []
        for i in range(len(texts)):
            p, g = q["p"][i], q["g"][i]
            wanted = want[i] if want is not None and mode != "random" else None
            depth_i = min(n, max(depth, CHAIN_DEPTH)) if i in part_kinds or wanted else depth
            if mode == "gemini":
                _, ids = self.index.search(fuse_queries(p[None], g[None]), depth_i)
                rows = np.array([self._row[v] for v in ids[0]])
            else:
                s_act, s_obj = a_all @ p, o_all @ g
                if mode == "random":
                    rows = (rng or np.random.default_rng()).choice(n, size=k, replace=False)
                else:
                    score = {"action": s_act, "object": s_obj, "fixed": 0.5 * (s_act + s_obj)}[mode]
                    rows = np.argsort(-score, kind="stable")[:depth_i]
            s_act_r, s_obj_r = a[rows] @ p, o[rows] @ g
            fused = w[rows, 0] * s_act_r + w[rows, 1] * s_obj_r
            score = {"gemini": fused, "action": s_act_r, "object": s_obj_r,
                     "fixed": 0.5 * (s_act_r + s_obj_r), "random": fused}[mode]
            order, bonus, kinds = np.arange(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
            if rerank:
                row_ids = [self._ids[r] for r in rows]
                bonus = agreement(q_cues[i:i + 1], self._video_cues(row_ids))[0]
                if i in part_kinds:
                    kinds = kind_agreement(part_kinds[i], self._video_kinds(row_ids))
                order = rerank_order(score, self.rerank_weight * bonus + self.chain_weight * kinds, 1.0)
            if wanted:              # videos of the wanted kind first, each group in its order
                shows = np.array([wanted in kk for kk in self._video_kinds([self._ids[r] for r in rows])])
                order = np.concatenate([order[shows[order]], order[~shows[order]]])
            out.append([Hit(self._ids[rows[j]], rank + 1, float(score[j]), float(s_act_r[j]),
                            float(s_obj_r[j]), float(w[rows[j], 0]), float(w[rows[j], 1]), float(bonus[j]),
                            float(kinds[j]))
                        for rank, j in enumerate(order[:k])])
        return out

    def _part_kinds(self, texts: list[str], mode: str) -> dict[int, list]:
        """{index of a text that ``split_prompts`` cuts into parts (with a kind reader: of every
        text): the kind each part asks for (``rerank.part_kind``: what the part's best videos show,
        each part searched alone in ``mode``, and what the reader reads in its words)}."""
        parts, owners = split_prompts(texts)
        counts = np.bincount(owners, minlength=len(texts))
        keep = [j for j, o in enumerate(owners) if counts[o] > 1 or self.kind_reader is not None]
        if not keep:
            return {}
        sent = [strip_scene(parts[j]) for j in keep]     # the kind from the motion words alone
        hits = self.search_many(sent, k=PART_VOTES, mode=mode, chain=False)
        reads = self.kind_reader.read(sent) if self.kind_reader is not None else [None] * len(sent)
        out: dict[int, list] = {}
        for j, h, read in zip(keep, hits, reads):
            out.setdefault(owners[j], []).append(part_kind(self._video_kinds([x.id for x in h]), read))
        return out

    def backed_reads(self, texts: list[str], mode: str = "gemini") -> list[dict | None]:
        """Per text (one motion part each), the kind reader's reading of its words ({kind:
        probability}, ``KindReader.read``) where the kind retrieval settles on for it agrees
        (``rerank.part_kind``: its ``PART_VOTES`` best videos' vote plus that reading, as the
        re-ranking reads a part), else None; all None without a reader or in random mode. A
        reading the videos outvote is one the reader alone holds: "pirouettes to the right"
        reads 0.66-0.80 cartwheel while every video it finds spins. Counted by ``eval read-gate``;
        the read lead does not use it (it lost more right OOD leads than it mended: docs/lab-notebook.md,
        *Backed reading*)."""
        if self.kind_reader is None or mode == "random" or not len(texts):
            return [None] * len(texts)
        sent = [strip_scene(t) for t in texts]
        reads = self.kind_reader.read(sent)
        hits = self.search_many(sent, k=PART_VOTES, mode=mode, chain=False)
        out = []
        for read, h in zip(reads, hits):
            top = max(read, key=read.get) if read else None
            out.append(read if top is not None and part_kind(self._video_kinds([x.id for x in h]), read) == top
                       else None)
        return out

    def _video_kinds(self, ids: list[str]) -> list[frozenset]:
        """The motion kinds the database records for each video (empty: not recorded), cached."""
        for v in ids:
            if v not in self._kinds:
                self._kinds[v] = frozenset(self.db.record(v).get("spec", {}).get("kinds") or [])
        return [self._kinds[v] for v in ids]

    def _video_cues(self, ids: list[str]) -> np.ndarray:
        """(N, 4) attribute codes of videos from their captions (-1 without captions), cached."""
        todo = [v for v in ids if v not in self._cues]
        if todo:
            for v, c in zip(todo, video_cues([captions_of(self.db.record(v)) for v in todo])):
                self._cues[v] = c
        return np.stack([self._cues[v] for v in ids])

    # ---------------------------------------------------------------------- video access
    def encode_arrays(self, keypoints: np.ndarray, object_feats: np.ndarray) -> dict[str, np.ndarray]:
        """{"frames" (16, D), "a", "o", "w"} of one video that is not in the database (a
        user's private upload), from its keypoints (16, 17, 3) and I3D features (1024,), as the
        searching retriever sees it (scores, router weights)."""
        return _encode_one(self.model, keypoints, object_feats)

    def prior_arrays(self, keypoints: np.ndarray, object_feats: np.ndarray) -> VideoFeatures:
        """``VideoFeatures`` the motion LLM reads for a video given as arrays (an upload, a
        mirror image): the reader's per-frame features and object embedding, and the keypoints."""
        kp = np.asarray(keypoints, np.float32)
        reader = self.reader or self.model
        emb = _encode_one(reader, kp, object_feats)
        return VideoFeatures(emb["frames"], emb["o"][:reader.config.embed_dim], kp)

    def scores_for(self, text: str, emb: dict[str, np.ndarray]) -> dict:
        """Channel scores and router weights of one video's embeddings for ``text``."""
        q = self.encode_query([text])
        sa, so = float(emb["a"] @ q["p"][0]), float(emb["o"] @ q["g"][0])
        w = np.asarray(emb["w"], np.float64)
        score = brute_force_fused(q["p"], q["g"], emb["a"][None], emb["o"][None], w[None])[0, 0]
        return {"score": float(score), "action_score": sa, "object_score": so,
                "w_action": float(w[0]), "w_object": float(w[1])}

    def has_video(self, video_id: str) -> bool:
        return video_id in self._row

    @property
    def video_ids(self) -> list[str]:
        """Ids of the stored videos, in database order."""
        return list(self._row)

    def video_prior(self, video_id: str, text: str | None = None):
        """``VideoFeatures`` of a stored video for the motion LLM: its per-frame action features,
        object embedding and keypoints (for models with a pose prefix). With ``text``, a video
        whose captions name only the other side than the words (``mirrors(text, id)``) comes as
        its mirror image: keypoints mirrored and the action features computed from them."""
        if text is not None and self.mirrors(text, video_id):
            return self.mirrored_prior(video_id)
        frames, obj = self.video_features(video_id)
        return VideoFeatures(frames, obj, self.db.keypoints[self._row[video_id]])

    def mirrors(self, text: str, video_id: str) -> bool:
        """Whether ``text`` gets ``video_id`` as its mirror image (``sides.mirror_for``: the words
        name one side, the video's captions only the other). Videos without captions (a user's
        own) are never mirrored."""
        return mirror_for(text, captions_of(self.db.record(video_id)))

    def mirrored_prior(self, video_id: str):
        """``VideoFeatures`` of the horizontal mirror image of a stored video (cached)."""
        cache = self.__dict__.setdefault("_mirror_cache", {})
        if video_id not in cache:
            r = self._row[video_id]
            kp = mirror_keypoints(np.asarray(self.db.keypoints[r], np.float32))
            cache[video_id] = self.prior_arrays(kp, self.db.object[r])
        return cache[video_id]

    def video_features(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(per-frame action features (16, D), object embedding (D,)) of a stored video, as the
        motion LLMs read it (the reader's, computed once per row and stored at the cache's
        precision, when there is one)."""
        r = self._row[video_id]
        if self.reader is None:          # the object embedding without the appearance half, if any
            return self.emb["frames"][r], self.emb["o"][r][:self.model.config.embed_dim]
        if r not in self._read:
            emb = _encode_one(self.reader, self.db.keypoints[r], self.db.object[r])
            self._read[r] = (emb["frames"].astype(FIELDS["frames"]), emb["o"].astype(FIELDS["o"]))
        return self._read[r]

    def video_path(self, video_id: str, cache_dir: Path | None = None) -> Path:
        """A playable file of the video: the user's file, or the rendered synthetic video
        (rendered once into the database's ``media/`` folder)."""
        rec = self.db.record(video_id)
        if rec.get("kind") == "synthetic":
            from backend.retrieval.videos.synth import VideoSpec, render_video

            path = Path(cache_dir or self.db.root / "media") / f"{video_id}.mp4"
            if not path.is_file():
                with atomic_output(path) as tmp:
                    render_video(VideoSpec.from_json(rec["spec"]), tmp)
            return path
        src = Path(rec["source"])
        if not src.is_file():
            raise FileNotFoundError(f"video {video_id}: its file {src} is gone")
        return src

    def add_videos(self, folder, workers: int = 1, progress: bool = False):
        """Index new videos into this database and the index (used for uploads)."""
        report = index_folder(folder, self.db.root, workers=workers, progress=progress)
        self.db = VideoDatabase.load(self.db.root)
        self.refresh()
        return report


__all__ = ["Hit", "MODES", "VideoRetriever", "open_database", "shipped_database_dir"]
