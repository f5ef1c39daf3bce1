"""The composition roots: the `dpflow` CLI and the demo data centre. They wire flows,
tasks and drivers together; nothing below imports them."""
