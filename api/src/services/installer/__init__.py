"""The install engine: one place where requirements become an environment."""
