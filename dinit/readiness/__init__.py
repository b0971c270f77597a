"""Readiness and health (§13), events and the web hook (§14)."""
