"""Fused Gemini-MVR retrieval: one inner-product FAISS index over [w0 a ; w1 o]."""

from .bench import bench_retrieval, format_bench
from .index import FusedIndex, brute_force_fused, fuse_queries, fuse_videos

__all__ = ["FusedIndex", "bench_retrieval", "brute_force_fused", "format_bench", "fuse_queries", "fuse_videos"]
