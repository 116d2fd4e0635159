"""Exporters. Importing this package registers every built-in exporter."""
