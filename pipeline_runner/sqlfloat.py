"""SQL expressions that print a REAL exactly as Python does, for the values where SQLite's
integer arithmetic can prove it, and NULL for the others (the caller then prints them in Python).

`runner show` of a big run prints two timestamps (JSON) or a duration (text) per step; made by
SQLite, a step's whole text is built without a Python object per value (showfast.py).  SQLite's
own `printf('%!.15g')` is not Python's `repr` (it stops at 15 digits), so:

- `float_repr(v)`: `repr(v)` of a time stamp, a REAL in [2**30, 2**32) (the years 2004 to
  2106).  Such a double is K / 2**s exactly (K an integer under 2**53, s = 22 below 2**31, 21
  above), so its fraction is F / 2**s with F = K mod 2**s, and half its gap to the next double
  is 1 / 2**(s+1).  `repr` prints the fewest fraction digits n whose nearest n-digit decimal
  lies within that half gap (it reads back as the same double), that nearest decimal; with
  d = round(F * 10**n / 2**s), the test |d / 10**n - F / 2**s| < 1 / 2**(s+1) is, times
  2**(s+1) * 10**n, an integer comparison: (2 * F * 10**n) mod 2**(s+1) is within 10**n of 0.
  Seven digits always do (half of 10**-7 is under 2**-23, the smaller half gap); a value
  halfway between two 7-digit decimals (where `repr`'s choice is its own) gives NULL.  The
  integer part has 10 digits and the value is under 1e16, so `repr` writes no exponent.
- `fixed2_exact(v)`: whether `printf('%.2f', v)` prints `f"{v:.2f}"`: for a REAL in [0, 1e5)
  whose hundredths are not within 1e-6 of a half, SQLite rounds the same way as Python (it
  nudges values within about 3e-16 of a half upwards, where Python rounds the exact binary
  value; its digits are exact far beyond the 7 printed).
"""

from __future__ import annotations

TIME_LOW, TIME_HIGH = float(1 << 30), float(1 << 32)  # what float_repr prints


def float_repr(v: str) -> str:
    """SQL: `repr()` of the REAL `v` (a column), `null` for NULL, NULL for a value it does not
    print (the caller checks that `v` is a REAL or NULL)."""
    return (
        f"CASE WHEN {v} IS NULL THEN 'null' WHEN {v} < {TIME_LOW} THEN NULL "
        f"WHEN {v} < 2147483648.0 THEN {_binade(v, 22)} "
        f"WHEN {v} < {TIME_HIGH} THEN {_binade(v, 21)} END"
    )


def _binade(v: str, s: int) -> str:
    """`repr` of `v` in [2**(52-s), 2**(53-s)), where a double's gap is 2**-s."""
    one, two = 1 << s, 2 << s
    k = f"CAST({v} * {one}.0 AS INTEGER)"  # exact: a power of two times a double
    f = f"({k} % {one})"

    def far(n: int) -> str:  # no n-digit decimal reads back as v
        p = 10**n
        return f"({f} * {2 * p} % {two} BETWEEN {p} AND {two - p})"

    def digits(n: int) -> str:  # v with its nearest n-digit fraction
        p = 10**n
        d = f"(({f} * {2 * p} + {one}) / {two})"
        if n == 0:
            return f"({k} / {one} + {d}) || '.0'"
        return f"({k} / {one}) || '.' || substr({d} + {p}, 2)"  # d < p: a shorter n would do

    tie = f"({f} * {2 * 10**7} % {two} = {one})"
    whens = [f"WHEN {far(6)} THEN CASE WHEN {tie} THEN NULL ELSE {digits(7)} END"]
    whens += [f"WHEN {far(n)} THEN {digits(n + 1)}" for n in range(5, -1, -1)]
    return f"CASE {' '.join(whens)} ELSE {digits(0)} END"


def fixed2_exact(v: str) -> str:
    """SQL: whether SQLite's `printf('%.2f', v)` prints `f"{v:.2f}"` of the REAL `v` (an
    expression): in range, and no half hundredth within 1e-6 of it (the two casts differ when
    one lies between)."""
    hundredths = f"({v}) * 100"
    return (
        f"({v}) >= 0 AND ({v}) < 1e5 AND CAST({hundredths} + 0.500001 AS INTEGER) = "
        f"CAST({hundredths} + 0.499999 AS INTEGER)"
    )
