"""One training engine: views, schedules, the guarded loop, evaluation."""
