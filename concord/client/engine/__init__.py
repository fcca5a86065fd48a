"""The RL engine: task config, environments, policy model, seeded sampler, rollouts, TOPLOC proofs, GRPO, bundles."""
