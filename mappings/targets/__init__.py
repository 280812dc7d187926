"""Each accounting system's pure planner: ledger document -> its payloads, markers, total check."""
