"""Bifrost execution runtime."""
