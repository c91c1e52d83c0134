"""Table and figure builders (plotly), no Kedro."""
