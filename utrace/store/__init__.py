"""Derived data: the trusted cache directory, and the forked child that makes or writes it off the main process."""
