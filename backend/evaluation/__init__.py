"""Judging what comes out: the text-motion evaluator (ours and the published Guo port,
``evaluator``, trained by ``train_evaluator``), the instruction checker, the metrics, and the
tables (``generation`` with its rows in ``rows``, ``follow``, ``servable``, ``video_use``,
``tokenizer``)."""
