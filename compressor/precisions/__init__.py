"""The built-in precisions, one module each (see `compressor.precision`). `compressor.precision` imports
every module of this package on the first lookup, so a new precision is a new module here."""
