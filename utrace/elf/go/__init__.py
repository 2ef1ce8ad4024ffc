"""Go's own tables: buildinfo, pclntab, module data, runtime type data, inline tree, Go DWARF types."""
