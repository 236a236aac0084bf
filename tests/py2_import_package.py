"""Import each module of a package from a Xen tree, on Python 2.

    python2.7 -S tests/py2_import_package.py TOOLS_PYTHON PACKAGE MODULE...

Prints one line per module: ``NAME ok``, ``NAME needs-c-bindings (...)``
when the import stops at xend's C bindings (a source tree has them
unbuilt), or ``NAME FAILED ...``; exit status 1 if any FAILED.  Python 2.7
code, run by tests/test_patches.py.
"""
import sys
import traceback


def main(argv):
    root, package, names = argv[0], argv[1], argv[2:]
    sys.path.insert(0, root)
    bad = 0
    for name in names:
        full = name == "__init__" and package or package + "." + name
        try:
            module = __import__(full, {}, {}, ["__name__"])
            if not module.__file__.startswith(root):
                raise ImportError("%s came from %s, not the tree" % (full, module.__file__))
        except ImportError:
            error = sys.exc_info()[1]
            source = traceback.extract_tb(sys.exc_info()[2])[-1][3] or ""
            if "lowlevel" in source:
                sys.stdout.write("%s needs-c-bindings (%s)\n" % (name, source.strip()))
                continue
            sys.stdout.write("%s FAILED %s\n" % (name, error))
            bad = 1
        except Exception:
            sys.stdout.write("%s FAILED %s\n" % (name, sys.exc_info()[1]))
            bad = 1
        else:
            sys.stdout.write("%s ok\n" % name)
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
