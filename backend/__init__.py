"""VimoRAG's back end, by the paper's stages: ``data`` (the motion corpus), ``retrieval``
(Gemini-MVR and the video database), ``generation`` (tokenizer and motion LLM), ``evaluation``
(evaluators and tables), ``pipeline`` (the composed system); ``checkpoints`` (where trained parts
live), ``bench`` (speed), ``cli`` (``python -m backend``)."""
