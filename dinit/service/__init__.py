"""Service directories: discovery and validation of ``DINIT_DIR``, and ``env/`` directories (§2, §9)."""
