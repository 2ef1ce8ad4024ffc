"""Go's own tables, one format a module.

gobin (GoBinary: the opened file, relocated reads, its few symbols, cached results; `open_binary`),
buildinfo (version, module info, ABI), pclntab (the function table, pc-value tables), moduledata,
rtype (runtime type names), inline (inline trees without DWARF), godwarf (functions, parameters and
inlined call sites from Go's DWARF), dwarftypes (Go types from DWARF), goasm (return sites, stack
check), gosyms (the one symbol source of a Go program). Generic DWARF is in `utrace.elf.dwarf`.
"""
