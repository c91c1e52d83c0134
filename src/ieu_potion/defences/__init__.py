"""Defence algorithms (torch only, no Kedro)."""
