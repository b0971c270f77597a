"""Processes: starting programs, what dinit knows of each, and reparented processes (§3, §6)."""
