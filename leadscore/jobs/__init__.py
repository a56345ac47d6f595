"""Offline jobs on the topics and the registry: rebuilding the feature state, training from
an event history."""
