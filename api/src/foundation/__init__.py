"""The bottom layer: settings, hashing, the Redis client and what every layer above shares."""
