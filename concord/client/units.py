"""Token amounts: one parser and one printer for every amount a person types or reads.

The rule (docs/OPERATORS.md "Amounts"):

    "10", "2.5", "0.000001", "1_000"   whole tokens (scaled by the token's decimals, 18 for the DevToken)
    "1000base"                          base units (the ERC-20's smallest unit, what the chain stores), an integer

Every flag that takes an amount (`--stake`, `--budget`, `--amount`) and every amount in a task file's
[chain] table goes through `parse_amount`; every amount the CLI prints goes through `format_amount`
(whole tokens and the token's symbol, e.g. "12.5 CDT"). A parsed amount stays unscaled until the token's
decimals are known (they are read from the chain), so the same text means the same tokens on any token.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext

BASE_SUFFIX = "base"  # "1000base": an amount in base units
UINT256 = 2**256 - 1
DEFAULT_DECIMALS = 18

_NUMBER = re.compile(r"[0-9][0-9_]*(\.[0-9_]*)?|\.[0-9][0-9_]*")


class AmountError(ValueError):
    """An amount that is not a number of tokens, has more decimals than the token, or is out of range;
    ``field`` names the flag or key it came from."""

    def __init__(self, field: str, text: str, problem: str) -> None:
        super().__init__(
            f"{field}: {problem}, got {text!r} "
            f"(amounts are whole tokens like 10 or 2.5, or base units like 1000{BASE_SUFFIX})"
        )
        self.field, self.text, self.problem = field, text, problem


@dataclass(frozen=True)
class TokenAmount:
    """An amount as typed: ``value`` tokens, or ``value`` base units when ``base``; scaled by ``units``."""

    value: Decimal
    base: bool
    text: str
    field: str

    def units(self, decimals: int = DEFAULT_DECIMALS, maximum: int = UINT256) -> int:
        """Base units of this amount for a token with ``decimals``; AmountError when it does not fit."""
        with localcontext() as exact:
            exact.prec = 400  # Decimal's default 28 digits would round amounts of more than 28 digits
            scaled = self.value if self.base else self.value.scaleb(decimals)
            whole = scaled == scaled.to_integral_value()
        if not whole:
            raise AmountError(self.field, self.text, f"more than {decimals} decimals (the token's smallest unit)")
        units = int(scaled)
        if units > maximum:
            raise AmountError(self.field, self.text, f"more than the maximum of {format_amount(maximum, decimals)}")
        return units


def parse_amount(text: str | int, field: str, allow_zero: bool = False) -> TokenAmount:
    """Parse an amount as typed (a string, or an int from a TOML file: whole tokens); AmountError names ``field``."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AmountError(field, repr(text), "expected a number of tokens (a string or an integer)")
    raw = str(text).strip()
    body = raw.lower()
    base = body.endswith(BASE_SUFFIX)
    if base:
        body = body[: -len(BASE_SUFFIX)].strip()
    if not _NUMBER.fullmatch(body):
        raise AmountError(field, raw, "not a non-negative decimal number")
    try:
        value = Decimal(body.replace("_", ""))
    except InvalidOperation:
        raise AmountError(field, raw, "not a decimal number") from None
    if base and value != value.to_integral_value():
        raise AmountError(field, raw, "base units are whole numbers")
    if value == 0 and not allow_zero:
        raise AmountError(field, raw, "must be more than 0")
    return TokenAmount(value, base, raw, field)


def amount_arg(flag: str, allow_zero: bool = False) -> Callable[[str], TokenAmount]:
    """An argparse ``type=`` for an amount flag: a bad value exits 2 with `argument FLAG: ...`."""

    def parse(text: str) -> TokenAmount:
        try:
            return parse_amount(text, flag, allow_zero)
        except AmountError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag}: ")) from None

    parse.__name__ = "amount"  # argparse names the type in `invalid amount value` messages
    return parse


def format_amount(units: int, decimals: int = DEFAULT_DECIMALS, symbol: str = "") -> str:
    """Base units as whole tokens, exact, no trailing zeros: 12500000000000000000 -> "12.5" (+ " SYM")."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    text = f"{sign}{whole}"
    if frac:
        text += "." + f"{frac:0{decimals}d}".rstrip("0")
    return f"{text} {symbol}" if symbol else text


@dataclass(frozen=True)
class TokenInfo:
    """A token's symbol and decimals: how amounts are read and printed."""

    symbol: str
    decimals: int

    def fmt(self, units: int) -> str:
        """Base units as whole tokens with the symbol, exact: "12.5 CDT"."""
        return format_amount(units, self.decimals, self.symbol)

    def units(self, amount: TokenAmount) -> int:
        return amount.units(self.decimals)


_current = TokenInfo("", DEFAULT_DECIMALS)  # the token this process talks to, once a command has read it


def remember_token(tok: TokenInfo) -> None:
    """Set the token this process's amounts are rendered in where no client is at hand (contract errors,
    metrics); client.runtime.lifecycle.token_info calls it when it first reads the token."""
    global _current
    _current = tok


def current_token() -> TokenInfo:
    """The token remember_token set (no symbol and 18 decimals before any)."""
    return _current
