"""The lifecycle: service states, why the container stops and with which exit code, and the
supervisor that drives both from the event loop (§5, §10)."""
