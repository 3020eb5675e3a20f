"""End-to-end retriever training: the context encoder trains with the question encoder and generator, and the index
follows it in generations re-embedded off the training step (`callback.Reindexer`, `job.run`, `worker`)."""
