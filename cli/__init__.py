"""The `shoal` command: a thin shell over shared.client and the orchestrator/compute services."""
