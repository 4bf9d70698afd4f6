"""Learning critics from labels: the critic-training records, importers of public datasets, the VLM instruction
tuning, the learned world critic's network, and the accuracy measures of IPO's Table 6."""
