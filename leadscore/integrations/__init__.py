"""Integrations with the systems around leadscore: the CRM sync consumer, erasure."""
