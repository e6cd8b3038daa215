"""BentoML services that each own one model and batch its requests."""
