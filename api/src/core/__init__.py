"""Settings, the requirements cache and the pieces every process shares."""
