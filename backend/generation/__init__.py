"""Stage 2 of the paper: the motion tokenizer (``vqvae``, trained by ``train_vqvae``), the motion
vocabulary, the motion LLM that reads text + video (``motion_llm``) and its SFT / McDPO training
(``train_llm``, ``preference``)."""
