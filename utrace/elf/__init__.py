"""ELF discovery: the only package that imports pyelftools, cxxfilt or capstone.

Everything here returns plain data (`utrace.model`) and raises `utrace.errors.ElfError` for bad files.
"""
