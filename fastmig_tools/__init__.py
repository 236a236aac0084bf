"""xend-fastmig tools (Python 3): the command, xenstore stand-ins, backend
models, the rehearsal and the patch tool.  See docs/architecture.md."""
