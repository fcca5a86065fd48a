"""Content store and wire formats: IPFS blocks, manifests, model shards, submissions, task specs."""
