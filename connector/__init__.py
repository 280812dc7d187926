"""The runtime of kantata-sync: clients, state store, engine, CLI, scheduler and sandbox."""

__version__ = "0.1.0"
