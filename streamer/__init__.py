"""The streaming worker, CLI and services of leadscore."""
