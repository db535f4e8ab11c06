"""The system being healed: estate file, backends, actions, probes."""
