"""The `kantata-sync` commands, grouped by what an operator does; `connector.faces.cli` holds
`main` and loads them all onto one typer app (`commands.common.app`)."""
