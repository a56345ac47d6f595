"""Connections to the services, configured from the settings: Kafka clients and topic
admin, Redis clients."""
