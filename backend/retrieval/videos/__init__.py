"""The video database and what fills it: ``database`` (versioned, atomic folders), ``decode``,
``pose`` (MediaPipe -> COCO-17), ``i3d`` (object features), ``ingest`` (a folder of videos in)
and ``synth`` (the rendered embedded videos and self-videos)."""
