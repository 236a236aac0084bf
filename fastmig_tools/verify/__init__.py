"""``xend-fastmig verify``: proof on a packager's own tree.

On a scratch copy of the tree, the series must apply with fuzz 0 and
byte-compile on Python 2.7; then the tree's real xend, stock and patched,
runs on the two-host harness (``fastmig_tools.xendharness``) through what
a packager needs to know before deploying: migration in both mixed
directions, save/restore, the option off and the package deleted behaving
as stock, a target failing after the image, HVM, tap, a shutdown-request
backend, and the gate and blackout at two memory sizes.
"""
