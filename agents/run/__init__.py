"""Running agents: checkpoints (no code on load), typed configs, env x agent compatibility checks."""
