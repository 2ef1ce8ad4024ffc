"""Terminal and file output: the only package that imports rich."""
