"""``leadscore api``: the scoring and lookup API, an ASGI service of its own.

Stateless and scaled apart from the workers: it reads the same Redis (lead features and
latest scores) and the same model registry, and changes neither. ``POST /score`` computes a
lead's features from a profile and recent events with the offline replay (the reference the
worker's Lua store is tested against) and scores them with the model the worker would use.
"""
