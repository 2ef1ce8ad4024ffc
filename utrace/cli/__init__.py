"""Command line: the only package that imports click."""
