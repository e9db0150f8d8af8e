"""Hypernetworks whose generated weights depend on where they are applied."""
