"""The runtime of kantata-sync: clients, state store, engine, CLI, scheduler and sandbox."""
