"""Backends that run a model or an artifact behind one contract (see base.Runner)."""
