"""The `go` runtime: plan, ABI assignment, argument decoding, signatures."""
