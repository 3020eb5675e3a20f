"""rayrag: fine-tune RAG models on your own knowledge base, retrieval served by Ray actors."""

__version__ = "0.1.0"
