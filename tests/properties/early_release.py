"""What the early release adds to the invariants (docs/design.md,
"Invariants", and issue 12): once the handover force-released a domain's
block devices, its source copy never resumes fast (SUSPEND_CANCEL) on
them; it comes back on re-created devices or not at all."""
from __future__ import annotations

__all__ = ["early_release_violations"]


def early_release_violations(out) -> list[str]:
    dominfo = out.dominfo
    if dominfo is None:
        return []
    released = [t for t, _name, args in dominfo.called("_releaseDevices")
                if len(args) > 1 and args[1]]
    fast = [t for t, _name, args in dominfo.called("xc.domain_resume")
            if len(args) > 1 and args[1]]
    if released and fast and min(released) <= max(fast):
        return ["resumed fast (SUSPEND_CANCEL) on torn-down devices"]
    return []
