"""The operator faces: CLI, daemon, reports, doctor, configuration, logs, metrics, notices."""
