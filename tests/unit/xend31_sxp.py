"""Xen 3.1's own sxp.py, run under Python 2, as a relocation server uses it.

The tree is read at run time, never copied: ``XEN31_TREE`` or the shared
read-only checkout.  ``xend_replies(values)`` returns, for each ``(err
(type ..) (value V))`` and ``(ok)``, the exact bytes 3.1's ``send_reply``
writes (``sxp.show`` then a newline) and what 3.1's ``Parser`` reads back,
fed one character at a time as a relocation connection delivers it.
"""

import glob
import json
import os
import subprocess
import sys

__all__ = ["sxp_path", "python2", "xend_replies", "xend_parse",
           "ours_via_xend", "discovered_inside_xend", "TRICKY_VALUES"]

_DEFAULT_TREE = "/work/shared/xen/3.1.0"
_SXP = os.path.join("tools", "python", "xen", "xend", "sxp.py")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Error texts a restore can produce, and worse: each breaks a reader that
# knows double quotes only, or counts parentheses inside strings.
TRICKY_VALUES = [
    "Restore failed",
    "bad ( ' \" value",
    "unbalanced (((",
    "closing ) ) )",
    "a lone \" quote",
    "it's",
    "both ' and \" quotes (",
    "new\nline\tand tab\r",
    "back\\slash \\' \\\" \\",
    "# not a comment ; [x] {y} <z> !",
    "",
    "Restore failed: (12, 'Cannot allocate memory')",
    "caf\xe9 \x00\x01\x7f\xff non-ASCII and control bytes",
]

_SCRIPT = r'''
import imp, json, sys
sxp = imp.load_source("xend31_sxp", sys.argv[1])
sys.path.insert(0, sys.argv[2])
from xend_fastmig.sxp_parse import first_value, Malformed

def text(value):
    if isinstance(value, list):
        return [text(v) for v in value]
    return value.decode("latin-1")

def xend_read(wire):
    parser = sxp.Parser()
    for index in range(len(wire)):
        parser.input_char(wire[index])
        if parser.ready():
            return [text(parser.get_val()), index + 1]
    return None

def xend_try(wire):
    try:
        return xend_read(wire)
    except Exception:
        return "malformed"

def ours(wire, module):
    try:
        value, end = first_value(wire, 0, module)
    except Malformed:
        return "malformed"
    if end < 0:
        return None
    return [text(value), end]

def xend_error(wire):
    try:
        xend_read(wire)
    except Exception:
        return str(sys.exc_info()[1])
    return None

def ours_raw(wire, module):
    try:
        value, end = first_value(wire, 0, module)
    except Malformed:
        return ["malformed", str(sys.exc_info()[1])]
    if value is None:
        return [None, end]
    return [text(value), end]

out = []
request = json.loads(sys.stdin.read())
if request.get("discover"):
    # As inside xend: its package importable, found without being passed.
    import os
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        sys.argv[1]))))
    from xend_fastmig.sxp_parse import parser_in_use
    sys.stdout.write(json.dumps({"in_use": parser_in_use(),
                                 "hex": ours_raw("('\\x4a')", None)}))
    sys.exit(0)
if request.get("via_xend") is not None:
    texts = [t.encode("latin-1") for t in request["via_xend"]]
    sys.stdout.write(json.dumps([{"xend_error": xend_error(t),
                                  "ours": ours_raw(t, sxp)} for t in texts]))
    sys.exit(0)
if request["texts"] is not None:
    texts = [t.encode("latin-1") for t in request["texts"]]
    sys.stdout.write(json.dumps([xend_try(t) for t in texts]))
    sys.exit(0)
values = [v.encode("latin-1") for v in request["values"]]
replies = [["ok"]]
for value in values:
    replies.append(["err", ["type", "<class 'xen.xend.XendError.XendError'>"],
                    ["value", value]])
for reply in replies:
    wire = sxp.to_string(reply) + "\n"
    out.append({"wire": wire.decode("latin-1"),
                "xend": xend_read(wire),
                "ours_py2": ours(wire, None),
                "ours_py2_via_xend": ours(wire, sxp)})
sys.stdout.write(json.dumps(out))
'''


def sxp_path():
    tree = os.environ.get("XEN31_TREE", _DEFAULT_TREE)
    path = os.path.join(tree, _SXP)
    if os.path.isfile(path):
        return path
    return None


def native_to_unicode(text):
    if sys.version_info[0] == 2 and isinstance(text, str):
        return text.decode("latin-1")
    return text


def unicode_to_native(value):
    """What json gave back, as the native str of this Python."""
    if isinstance(value, list):
        return [unicode_to_native(item) for item in value]
    if isinstance(value, dict):
        return dict((unicode_to_native(key), unicode_to_native(item))
                    for key, item in value.items())
    if sys.version_info[0] == 2 and isinstance(value, unicode):  # noqa: F821
        return value.encode("latin-1")
    return value


def python2():
    if sys.version_info[0] == 2:
        return sys.executable
    found = []
    if os.environ.get("FASTMIG_PYTHON27"):
        found.append(os.environ["FASTMIG_PYTHON27"])
    found.extend(sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/2.7.*/bin/python2.7")), reverse=True))
    for candidate in found:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def xend_replies(values=None):
    """Each reply 3.1 writes for ``values``: a dict of its ``wire`` text,
    what 3.1's Parser read (``xend``: [value, end]) and what ours read on
    Python 2, alone (``ours_py2``) and driving 3.1's (``ours_py2_via_xend``).
    """
    if values is None:
        values = TRICKY_VALUES
    return _run({"values": [native_to_unicode(v) for v in values],
                 "texts": None})


def xend_parse(texts):
    """What 3.1's Parser reads from each text: [value, end] of its first
    value, None when incomplete, "malformed" when it raised."""
    return _run({"values": None,
                 "texts": [native_to_unicode(t) for t in texts]})


def ours_via_xend(texts):
    """``first_value`` on Python 2 driving 3.1's Parser, for each text:
    a dict of ``ours`` ([value, end], [None, -1] or ["malformed", message])
    and ``xend_error`` (the message 3.1's Parser raised, or None)."""
    return _run({"values": None, "texts": None,
                 "via_xend": [native_to_unicode(t) for t in texts]})


def discovered_inside_xend():
    """With 3.1's xen package importable, as inside xend: ``in_use``
    (``parser_in_use()``) and ``hex``, what ``first_value("('\\x4a')")``
    reads without being given a parser."""
    return _run({"values": None, "texts": None, "discover": True})


def _run(request):
    process = subprocess.Popen(
        [python2(), "-c", _SCRIPT, sxp_path(), _REPO],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Killed if it hangs (a broken parser may loop): Python 2.7's
    # communicate() has no timeout of its own.
    import threading
    timer = threading.Timer(60, process.kill)
    timer.start()
    try:
        out, err = process.communicate(json.dumps(request).encode("ascii"))
    finally:
        timer.cancel()
    if process.returncode != 0:
        raise RuntimeError("Python 2 with 3.1's sxp.py failed: %s"
                           % err.decode("latin-1"))
    return unicode_to_native(json.loads(out.decode("ascii")))
