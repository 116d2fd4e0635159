"""Frontends: produce a model and lower it to the IR. Importing this package registers them."""
