"""Shoal's shared contract: job spec, wire messages, subjects, errors and the NATS bus."""
