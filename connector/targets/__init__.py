"""The accounting systems the connector writes to: each accounting system is one package here."""
