"""One folder per pipeline: thin nodes around library code, and the pipeline itself."""
