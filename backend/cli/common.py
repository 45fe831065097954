"""What several command groups share: thread count, and loading the corpus + tokenizer +
retriever that the motion-LLM commands start from."""
from __future__ import annotations


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def command_group(sub, name: str, help: str, metavar: str = "COMMAND"):
    """A command with subcommands (``train``, ``eval``, ...): its sub-parser collection."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_cmd", required=True,
                                                          metavar=metavar)


def load_stack(args, need_retriever: bool = True):
    """(corpus, shipped VQ-VAE, embedded retriever or None) for the motion-LLM commands."""
    from backend.checkpoints import checkpoints_dir
    from backend.data.dataset import open_corpus
    from backend.generation.kind_reader import with_kind_reader
    from backend.generation.vqvae import MotionVQVAE
    from backend.retrieval.service import VideoRetriever

    set_threads(args.threads)
    corpus = open_corpus(args.data)
    vqvae = MotionVQVAE.from_pretrained(checkpoints_dir() / "vqvae").eval()
    retriever = with_kind_reader(VideoRetriever.open("embedded")) if need_retriever else None
    return corpus, vqvae, retriever


def training_db(args):
    """The captioned video database the retriever trains and is evaluated on (``--db-dir``)."""
    from backend.retrieval.service import open_database
    from backend.retrieval.videos.database import VideoDatabase

    return VideoDatabase.load(args.db_dir) if args.db_dir else open_database("embedded")
