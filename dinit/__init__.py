"""dinit: an init (PID 1) for containers that runs a runit-style service directory."""

__version__ = "0.2.0"
