"""Shoal's compute agent: registration, heartbeats, bidding, executions and engines."""
