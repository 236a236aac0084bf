"""How many handovers the property tests ran, and how many broke an
invariant (printed at the end of the pytest run)."""

RUNS = 0
VIOLATING = 0


def count(violations: list[str]) -> None:
    global RUNS, VIOLATING
    RUNS += 1
    if violations:
        VIOLATING += 1
