"""The node runtime both roles share: config, connection, task context and model cache, events, display,
processes, timing."""
