import pytest


@pytest.fixture(scope="session")
def embedded_corpus():
    """The default embedded corpus, built on first use exactly as a new user's first command does."""
    from backend.data.dataset import open_corpus

    return open_corpus(progress=False)
