"""The single-host backend: one container on one Docker engine."""
