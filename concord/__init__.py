"""Concord: verifiable, decentralized RL training coordinated on chain (the library: `concord.client`,
the SDK, content, engine, node runtime, trainer and initiator; `concord.validator`, the validator)."""
