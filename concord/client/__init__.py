"""Concord client: the protocol SDK (chain, store, model, rollout, proofs) and the trainer node."""
