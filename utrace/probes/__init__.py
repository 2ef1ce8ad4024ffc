"""Probe specs to BPF C: the only place that writes C."""
