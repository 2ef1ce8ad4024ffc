"""BPF: the only package that imports bcc (in backend.py): load, attach, ring buffer, detach; raw bpf
syscalls, BTF, kernel headers."""
