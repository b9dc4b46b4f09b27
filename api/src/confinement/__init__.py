"""Confinement of a process that runs code the platform does not trust (an
execution, an installer building a package): Landlock rules over the
filesystem, signals and abstract sockets, no capabilities, no new privileges.
`sandbox.Confinement` is what callers build and apply; `sandbox_grants`
plans the rules, `landlock` makes the system calls."""
