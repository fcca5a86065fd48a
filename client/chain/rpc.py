"""JSON-RPC transport, the per-process signer, and contract-error decoding.

Why not web3's contract layer: a node needs to know exactly when a transaction may be
re-sent. Here a signed transaction is built once per nonce and only those same bytes are
ever re-broadcast, so a retry after a dropped connection can never spend a nonce twice.
Reverts are turned into ``ContractError(name, args)`` from the ABI's custom errors,
before the transaction is sent (gas estimation) or after (replay of a failed receipt).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import requests
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from client.runtime import timing

log = logging.getLogger(__name__)

TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
             ConnectionResetError)
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")         # Panic(uint256)


# ----------------------------------------------------------------------------- errors

class ChainError(Exception):
    """Base for every failure this SDK raises."""


class RpcUnavailable(ChainError):
    """The RPC endpoint stayed unreachable through every retry."""

    def __init__(self, url: str, method: str, attempts: int, last: BaseException) -> None:
        super().__init__(f"{method} to {url} failed {attempts} times; last error: {type(last).__name__}: {last}")
        self.url, self.method, self.attempts, self.last = url, method, attempts, last


class RpcError(ChainError):
    """The node answered with a JSON-RPC error that is not a contract revert."""

    def __init__(self, method: str, code: int, message: str, data: object = None) -> None:
        super().__init__(f"{method}: RPC error {code}: {message}")
        self.method, self.code, self.message, self.data = method, code, message, data


class ContractError(ChainError):
    """A contract reverted; ``name`` is the custom error and ``params`` its decoded arguments.

    e.g. ``ContractError("WrongPhase", {"taskId": 1, ...})``.
    """

    def __init__(self, name: str, params: dict | None = None, data: bytes = b"") -> None:
        self.name = name
        self.params = dict(params or {})
        self.data = data
        shown = ", ".join(f"{k}={v.name if isinstance(v, IntEnum) else repr(v)}" for k, v in self.params.items())
        super().__init__(f"{name}({shown})")


class TxReverted(ChainError):
    """A mined transaction failed and its revert data could not be recovered."""

    def __init__(self, tx_hash: str, gas_used: int) -> None:
        super().__init__(f"transaction {tx_hash} reverted (gas used {gas_used}) with no decodable reason")
        self.tx_hash, self.gas_used = tx_hash, gas_used


class ReceiptTimeout(ChainError):
    def __init__(self, tx_hash: str, timeout: float) -> None:
        super().__init__(f"no receipt for {tx_hash} after {timeout:.0f}s")
        self.tx_hash, self.timeout = tx_hash, timeout


class BroadcastUnknown(ChainError):
    """The node stayed unreachable while a signed transaction was being sent: it may or may not
    have it. ``pending`` names the transaction; ``Signer.wait(pending)`` settles the question
    (the signer re-reads its nonce, so the nonce is never used for a different transaction)."""

    def __init__(self, pending: PendingTx, cause: RpcUnavailable) -> None:
        super().__init__(f"broadcast of {pending.tx_hash} (nonce {pending.nonce}) unconfirmed: {cause}")
        self.pending, self.cause = pending, cause


class NonceConflict(ChainError):
    """The node rejected our nonce: another process is sending with the same key."""

    def __init__(self, address: str, nonce: int, message: str) -> None:
        super().__init__(f"nonce {nonce} of {address} rejected ({message}); use one signer per key")
        self.address, self.nonce, self.message = address, nonce, message


# ----------------------------------------------------------------------------- transport

@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient I/O failures."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delays(self) -> Iterable[float]:
        for i in range(self.attempts - 1):
            yield min(self.max_delay, self.base_delay * 2 ** i)


class Rpc:
    """A JSON-RPC client over one HTTP session, retrying only transient transport errors."""

    def __init__(self, url: str, timeout: float = 30.0, retry: RetryPolicy = RetryPolicy()) -> None:
        self.url = url
        self.timeout = timeout
        self.retry = retry
        self._local = threading.local()  # one HTTP session per thread: requests.Session is not thread-safe
        self._ids = itertools.count(1)    # itertools.count is atomic under the GIL

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post(self, payload: object, label: str) -> object:
        delays = iter(self.retry.delays())
        attempt = 0
        while True:
            attempt += 1
            try:
                with timing.span("chain"):
                    resp = self._session().post(self.url, json=payload, timeout=self.timeout)
                if resp.status_code in (429, 502, 503, 504):
                    raise requests.ConnectionError(f"HTTP {resp.status_code}")
                resp.raise_for_status()
                return resp.json()
            except TRANSIENT as exc:
                delay = next(delays, None)
                if delay is None:
                    raise RpcUnavailable(self.url, label, attempt, exc) from None
                log.warning("%s to %s failed (%s); retry %d in %.2fs", label, self.url, type(exc).__name__,
                            attempt, delay)
                time.sleep(delay)

    def call(self, method: str, *params: object) -> object:
        body = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}, method)
        if "error" in body:
            err = body["error"]
            raise RpcError(method, err.get("code", 0), err.get("message", ""), err.get("data"))
        return body["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[object]]]) -> list[object]:
        """Several calls in one HTTP request; an RpcError in a slot is returned, not raised."""
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in zip(ids, calls)]
        body = self._post(payload, f"batch of {len(calls)}")
        by_id = {item["id"]: item for item in body}
        out: list[object] = []
        for i, (method, _) in zip(ids, calls):
            item = by_id[i]
            if "error" in item:
                err = item["error"]
                out.append(RpcError(method, err.get("code", 0), err.get("message", ""), err.get("data")))
            else:
                out.append(item["result"])
        return out

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block_timestamp(self, block: str | int = "latest") -> int:
        tag = hex(block) if isinstance(block, int) else block
        return int(self.call("eth_getBlockByNumber", tag, False)["timestamp"], 16)


# ----------------------------------------------------------------------------- revert decoding

def abi_type(param: dict) -> str:
    """Canonical ABI type of a parameter (tuples expanded), for selectors and eth_abi."""
    t = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){t[5:]}"
    return t


def signature(entry: dict) -> str:
    return f"{entry['name']}({','.join(abi_type(p) for p in entry.get('inputs', []))})"


class ErrorDecoder:
    """Maps 4-byte selectors of every ABI error (ours, OpenZeppelin's) to name and arguments.

    ``enums`` turns Solidity enum arguments (by their ABI ``internalType``, e.g.
    "enum IConcordTypes.Phase") into the matching Python IntEnum.
    """

    def __init__(self, abis: Iterable[Sequence[dict]], enums: Mapping[str, type[IntEnum]] | None = None) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str], list[str]]] = {}
        self._enums = dict(enums or {})
        for abi in abis:
            for entry in abi:
                if entry.get("type") == "error":
                    inputs = entry.get("inputs", [])
                    self._errors[keccak(text=signature(entry))[:4]] = (
                        entry["name"], [p["name"] for p in inputs], [abi_type(p) for p in inputs],
                        [p.get("internalType", "") for p in inputs])

    def decode(self, data: bytes) -> ContractError:
        sel, body = data[:4], data[4:]
        if sel == ERROR_STRING_SELECTOR:
            (reason,) = abi_decode(["string"], body)
            return ContractError("Error", {"reason": reason}, data)
        if sel == PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], body)
            return ContractError("Panic", {"code": code}, data)
        if sel in self._errors:
            name, names, types, internal = self._errors[sel]
            values = abi_decode(types, body)
            params = {}
            for i, (n, v, it) in enumerate(zip(names, values, internal)):
                params[n or f"arg{i}"] = self._enums[it](v) if it in self._enums else _plain(v)
            return ContractError(name, params, data)
        if not data:
            return ContractError("EmptyRevert", {}, data)
        return ContractError("UnknownError", {"selector": "0x" + sel.hex()}, data)


def _plain(value: object) -> object:
    """eth_abi values as plain Python: checksummed addresses stay str, bytes stay bytes."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    return value


def revert_data(err: RpcError) -> bytes | None:
    """Revert bytes from a node's error object (anvil/geth put them in ``data``), else None."""
    data = err.data
    if isinstance(data, dict):
        data = data.get("data") or data.get("result")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if "revert" in err.message.lower() and data is None:
        return b""
    return None


# ----------------------------------------------------------------------------- signer

@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    block_number: int
    gas_used: int
    status: int
    logs: tuple = field(repr=False)

    @staticmethod
    def from_rpc(raw: dict) -> Receipt:
        return Receipt(raw["transactionHash"], int(raw["blockNumber"], 16), int(raw["gasUsed"], 16),
                       int(raw["status"], 16), tuple(raw["logs"]))


@dataclass(frozen=True)
class PendingTx:
    """A broadcast transaction: what is needed to wait for it and to replay it on failure."""

    tx_hash: str
    nonce: int
    sender: str
    to: str
    data: bytes = field(repr=False)
    value: int = 0


class Signer:
    """The one sender for a key in this process: owns its nonce sequence.

    Several threads may share a Signer; several processes must each use their own key.
    """

    def __init__(self, rpc: Rpc, account: LocalAccount, decoder: ErrorDecoder | None = None,
                 gas_margin: float = 1.25, receipt_timeout: float = 120.0) -> None:
        self.rpc = rpc
        self._account = account
        self.address = to_checksum_address(account.address)
        self.decoder = decoder or ErrorDecoder([])
        self.gas_margin = gas_margin
        self.receipt_timeout = receipt_timeout
        self._chain_id: int | None = None
        self._nonce: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    def _sync_nonce(self) -> int:
        return int(self.rpc.call("eth_getTransactionCount", self.address, "pending"), 16)

    def contract_error(self, err: RpcError) -> ChainError:
        data = revert_data(err)
        return err if data is None else self.decoder.decode(data)

    def estimate_gas(self, to: str | None, data: bytes, value: int = 0) -> int:
        """Gas for the call; a revert here raises ContractError and spends no nonce."""
        tx = {"from": self.address, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            tx["to"] = to
        try:
            return int(self.rpc.call("eth_estimateGas", tx), 16)
        except RpcError as err:
            raise self.contract_error(err) from None

    def _fees(self) -> tuple[int, int]:
        gas_price = int(self.rpc.call("eth_gasPrice"), 16)
        tip = min(gas_price, 10 ** 9)
        return 2 * gas_price + tip, tip

    def send(self, to: str | None, data: bytes, value: int = 0, gas: int | None = None) -> PendingTx:
        """Estimate, sign with the next nonce, broadcast. Re-broadcasts only identical bytes."""
        if gas is None:
            gas = int(self.estimate_gas(to, data, value) * self.gas_margin) + 10_000
        max_fee, tip = self._fees()
        with self._lock:
            if self._nonce is None:
                self._nonce = self._sync_nonce()
            nonce = self._nonce
            tx = {"chainId": self.chain_id, "nonce": nonce, "gas": gas, "maxFeePerGas": max_fee,
                  "maxPriorityFeePerGas": tip, "value": value, "data": data, "type": 2}
            if to is not None:
                tx["to"] = to
            signed = self._account.sign_transaction(tx)
            raw = "0x" + bytes(signed.raw_transaction).hex()
            pending = PendingTx("0x" + bytes(signed.hash).hex(), nonce, self.address, to or "", data, value)
            try:
                self.rpc.call("eth_sendRawTransaction", raw)
            except RpcUnavailable as exc:
                # The node may or may not hold it: re-read the nonce before the next send.
                self._nonce = None
                raise BroadcastUnknown(pending, exc) from None
            except RpcError as err:
                if self._already_known(pending.tx_hash, err):
                    pass  # a retried broadcast of these same bytes had landed
                elif "nonce" in err.message.lower():
                    self._nonce = None
                    raise NonceConflict(self.address, nonce, err.message) from None
                else:
                    raise self.contract_error(err) from None
            self._nonce = nonce + 1
        return pending

    def _already_known(self, tx_hash: str, err: RpcError) -> bool:
        msg = err.message.lower()
        if "already known" in msg or "already imported" in msg or "nonce too low" in msg:
            return self.rpc.call("eth_getTransactionByHash", tx_hash) is not None
        return False

    def wait(self, pending: PendingTx, timeout: float | None = None) -> Receipt:
        """Poll for the receipt; a failed transaction raises its decoded ContractError."""
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            raw = self.rpc.call("eth_getTransactionReceipt", pending.tx_hash)
            if raw is not None:
                receipt = Receipt.from_rpc(raw)
                if receipt.status != 1:
                    raise self._failure(pending, receipt)
                return receipt
            if time.monotonic() > deadline:
                raise ReceiptTimeout(pending.tx_hash, timeout)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def wait_all(self, pendings: Sequence[PendingTx], timeout: float | None = None) -> list[Receipt]:
        """Receipts for many transactions, fetched in batches (for the benchmark and fan-outs)."""
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        found: dict[str, Receipt] = {}
        while True:
            missing = [p for p in pendings if p.tx_hash not in found]
            if not missing:
                break
            results = self.rpc.batch([("eth_getTransactionReceipt", [p.tx_hash]) for p in missing])
            for p, raw in zip(missing, results):
                if isinstance(raw, RpcError):
                    raise raw
                if raw is not None:
                    found[p.tx_hash] = Receipt.from_rpc(raw)
            if len(found) < len(pendings):
                if time.monotonic() > deadline:
                    raise ReceiptTimeout(missing[0].tx_hash, timeout)
                time.sleep(0.05)
        receipts = [found[p.tx_hash] for p in pendings]
        for p, r in zip(pendings, receipts):
            if r.status != 1:
                raise self._failure(p, r)
        return receipts

    def _failure(self, pending: PendingTx, receipt: Receipt) -> ChainError:
        """Replay the failed call just before its block to recover the revert reason."""
        tx = {"from": pending.sender, "to": pending.to, "data": "0x" + pending.data.hex(), "value": hex(pending.value)}
        try:
            self.rpc.call("eth_call", tx, hex(max(receipt.block_number - 1, 0)))
        except RpcError as err:
            decoded = self.contract_error(err)
            if isinstance(decoded, ContractError):
                return decoded
        return TxReverted(pending.tx_hash, receipt.gas_used)

    def transact(self, to: str | None, data: bytes, value: int = 0, gas: int | None = None) -> Receipt:
        return self.wait(self.send(to, data, value, gas))
