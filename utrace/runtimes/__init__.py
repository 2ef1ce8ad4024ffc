"""Runtime plugins: native, node, go, jvm."""
