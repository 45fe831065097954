"""Stage 1 of the paper: retrieving the human video a prompt is most like.

``model`` (Gemini-MVR: text/keypoint/object encoders and the action-object router), ``index``
(the fused FAISS index), ``service`` (the retriever the pipeline and app use), ``train`` and
``evaluate`` (its training and its table), ``videos/`` (the video database and everything that
fills it: decoding, pose, I3D, ingestion, synthetic videos)."""
