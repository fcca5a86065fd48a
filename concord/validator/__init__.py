"""Concord validator: checks, aggregation and the validator node."""
