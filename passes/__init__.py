"""Compression passes. Importing this package registers every built-in pass."""
