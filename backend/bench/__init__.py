"""Speed benchmarks (they print figures and ratios; tests never time anything): ``generate``
(text -> motion), ``retrieval`` (query latency, ingestion), ``index`` (FAISS at scale),
``render`` (MP4 render and one evaluation)."""
