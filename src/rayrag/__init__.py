"""rayrag: fine-tune RAG models on your own knowledge base, retrieval served by Ray actors."""

import os as _os

# OpenMP threads that spin while waiting (libgomp's default) collapse when training ranks,
# retrieval actors and FAISS share few cores: measured on a 2-core machine with other work
# running, one generator training step took 15-17 s with the default and 0.8-3 s with PASSIVE;
# FAISS on 2 threads 0.5-3.4 s against 0.17-0.19 s. It must be set before torch or faiss load
# their OpenMP runtime; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
