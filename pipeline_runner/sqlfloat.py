"""SQL expressions that print a REAL exactly as Python does, for the values where SQLite's
integer arithmetic can prove it, and NULL for the others (the caller then prints them in Python).

`runner show` of a big run prints two timestamps (JSON) or a duration (text) per step; made by
SQLite, a step's whole text is built without a Python object per value (showfast.py).  SQLite's
own `printf('%!.15g')` is not Python's `repr` (it stops at 15 digits), so:

- `float_repr(v)`: `repr(v)` of a time stamp, a REAL in [2**30, 2**32) (the years 2004 to
  2106).  Such a double is K / 2**22 exactly (K = v * 2**22, an integer under 2**54), so its
  fraction is F / 2**22 with F = K mod 2**22, and half its gap to the next double is h / 2**23
  (h = 1 below 2**31, 2 above).  `repr` prints the fewest fraction digits n whose nearest
  n-digit decimal lies within that half gap (it reads back as the same double), that nearest
  decimal; with d = round(F * 10**n / 2**22), the test |d / 10**n - F / 2**22| < h / 2**23 is,
  times 2**23 * 10**n, an integer comparison: (2 * F * 10**n) mod 2**23 is within h * 10**n of
  0.  Seven digits always do (half of 10**-7 is under 2**-23, the smaller half gap); a value
  halfway between two 7-digit decimals gets the even one, as `repr` gives it (a tie at fewer
  digits is too far to read back).  The integer part has 10 digits and the value is under
  1e16, so `repr` writes no exponent.  Checked against Python on every F of an integer part
  in each binade and at both ends of the range (tests/test_show_fast.py samples them).
- `fixed2_exact(v)`: whether `printf('%.2f', v)` prints `f"{v:.2f}"`: for a REAL in [0, 1e5)
  whose hundredths are not within 1e-6 of a half, SQLite rounds the same way as Python (it
  nudges values within about 3e-16 of a half upwards, where Python rounds the exact binary
  value; its digits are exact far beyond the 7 printed).
"""

from __future__ import annotations

TIME_LOW, TIME_HIGH = float(1 << 30), float(1 << 32)  # what float_repr prints
SCALE = 1 << 22  # such a double times SCALE is an integer


def float_repr(v: str) -> str:
    """SQL: `repr()` of the REAL `v` (a column), `null` for NULL, NULL for a value it does not
    print (the caller checks that `v` is a REAL or NULL)."""
    k = f"CAST({v} * {SCALE}.0 AS INTEGER)"  # exact: a power of two times a double
    return (
        f"CASE WHEN {v} IS NULL THEN 'null' WHEN {v} < {TIME_LOW} THEN NULL "
        f"WHEN {v} < 2147483648.0 THEN {_binade(k, 1)} "
        f"WHEN {v} < {TIME_HIGH} THEN {_binade(k, 2)} END"
    )


def _binade(k: str, half: int) -> str:
    """`repr` of v = k / 2**22 where half a double's gap is `half` / 2**23."""
    f = f"({k} & {SCALE - 1})"
    two = 2 * SCALE

    def far(n: int) -> str:  # no n-digit decimal reads back as v
        b = half * 10**n
        return f"({f} * {2 * 10**n} & {two - 1} BETWEEN {b} AND {two - b})"

    def digits(n: int) -> str:  # v with its nearest n-digit fraction
        if n == 0:
            return f"(({k} + {SCALE // 2}) >> 22) || '.0'"
        x = f"({f} * {2 * 10**n})"
        # round half up; for seven digits, half to even (the one tie `repr` meets)
        up = f"{SCALE - 1} + ({x} >> 23 & 1)" if n == 7 else f"{SCALE}"
        return f"printf('%d.%0{n}d', {k} >> 22, ({x} + {up}) >> 23)"  # < 10**n: else n-1 would do

    whens = [f"WHEN {far(n)} THEN {digits(n + 1)}" for n in range(6, -1, -1)]
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
