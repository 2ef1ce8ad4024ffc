"""What a target is: --pid / path / -- command -> Target, /proc/PID/{maps,root}, namespaces, perf maps,
stack symbolisation, launched commands; opens what a process controls safely."""
