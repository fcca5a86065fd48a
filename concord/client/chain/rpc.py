"""The connection (web3), the per-process signer, and contract-error decoding.

web3 does the transport, the ABI codec and the log decoding. Two things stay ours:

- ``Signer``: a signed transaction is built once per nonce and only those same bytes are ever
  re-broadcast, so a retry after a dropped connection can never spend a nonce twice (web3's
  ``send_transaction`` re-signs and re-reads the nonce on every call).
- ``ErrorDecoder``: a revert becomes ``ContractError(name, params)`` from every custom error the
  compiled contracts can raise, before the transaction is sent (gas estimation) or after
  (replay of a failed receipt); web3 only hands back the raw revert bytes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar, cast

import requests
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from eth_keys.datatypes import PrivateKey
from eth_typing import ABI, ABIError, ChecksumAddress, HexStr
from eth_utils.address import to_checksum_address
from web3 import HTTPProvider, Web3
from web3.exceptions import TransactionNotFound
from web3.middleware import Web3Middleware
from web3.providers import JSONBaseProvider
from web3.types import BlockIdentifier, LogReceipt, MakeRequestFn, RPCEndpoint, RPCResponse, TxReceipt
from web3.utils import function_abi_to_4byte_selector, get_abi_input_types
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from concord.client import timing
from concord.client.chain.artifacts import is_error

log = logging.getLogger(__name__)

T = TypeVar("T")
HTTP_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionResetError,
)
HTTP_BUSY = (429, 502, 503, 504)  # answers that mean "try again", not "you are wrong"
WS_TRANSIENT = (OSError, WebSocketException)
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
RECEIPT_POLL_S = (0.01, 0.25)  # first and longest pause between receipt polls (doubling between)


# ----------------------------------------------------------------------------- errors


class ChainError(Exception):
    """Base for every failure this SDK raises."""


class BadRpcUrl(ChainError):
    """Not an RPC URL this client can talk to (named before any connection is tried)."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(
            f"RPC URL {url!r}: {problem}; expected http(s)://host[:port] or ws(s)://host[:port] "
            "(e.g. http://127.0.0.1:8545)"
        )
        self.url, self.problem = url, problem


def check_rpc_url(url: str) -> str:
    """``url`` when it is an http(s) or ws(s) URL with a host and a usable port; BadRpcUrl otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:  # e.g. a port out of 0..65535, an unclosed [IPv6 bracket
        raise BadRpcUrl(url, str(e)) from None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise BadRpcUrl(url, "not a URL with an http(s) or ws(s) scheme and a host")
    if port == 0:
        raise BadRpcUrl(url, "port 0")
    return url


class RpcUnavailable(ChainError):
    """The RPC endpoint stayed unreachable through every retry."""

    def __init__(self, url: str, method: str, attempts: int, last: BaseException) -> None:
        super().__init__(f"{method} to {url} failed {attempts} times: {root_cause(last)}")
        self.url, self.method, self.attempts, self.last = url, method, attempts, last


class RpcError(ChainError):
    """The node answered with a JSON-RPC error (a revert keeps its bytes in ``data``)."""

    def __init__(self, method: str, code: int, message: str, data: object = None) -> None:
        super().__init__(f"{method}: RPC error {code}: {message}")
        self.method, self.code, self.message, self.data = method, code, message, data

    @staticmethod
    def from_response(method: str, error: object) -> RpcError:
        if isinstance(error, dict):
            return RpcError(method, error.get("code", 0), error.get("message", ""), error.get("data"))
        return RpcError(method, 0, str(error))


class ContractError(ChainError):
    """A contract reverted; ``name`` is the custom error and ``params`` its decoded arguments.

    e.g. ``ContractError("WrongPhase", {"taskId": 1, ...})``.
    """

    def __init__(self, name: str, params: Mapping[str, object] | None = None, data: bytes = b"") -> None:
        self.name = name
        self.params: dict[str, object] = dict(params or {})
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


def root_cause(exc: BaseException) -> str:
    """A transport failure in a few words: the innermost OS error ("Connection refused"), else the
    first line of the exception (requests nests three layers of pool and adapter text around it)."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        todo += [
            x for x in (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__) if isinstance(x, BaseException)
        ]
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


# ----------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient I/O failures."""

    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delays(self) -> Iterator[float]:
        for i in range(self.attempts - 1):
            yield min(self.max_delay, self.base_delay * 2**i)


class _Retrying(JSONBaseProvider):
    """Provider mixin: bounded retries of transport failures (the same request again, so a re-sent
    raw transaction is the same signed bytes), each attempt timed as a "chain" span. It comes first
    in its providers' bases, so ``super()`` is the transport (web3's HTTP provider, or _WebSocket)."""

    url: str
    retry: RetryPolicy

    def transient(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        send = super().make_request
        return self._retried(method, lambda: send(method, params))

    def make_batch_request(self, requests_: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        send = super().make_batch_request
        return self._retried(f"batch of {len(requests_)}", lambda: send(requests_))

    def _retried(self, label: str, attempt: Callable[[], T]) -> T:
        delays = iter(self.retry.delays())
        for n in itertools.count(1):
            try:
                with timing.span("chain"):
                    return attempt()
            except Exception as exc:
                if not self.transient(exc):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise RpcUnavailable(self.url, label, n, exc) from None
                log.warning("%s to %s failed (%s); retry %d in %.2fs", label, self.url, root_cause(exc), n, delay)
                time.sleep(delay)
        raise AssertionError("itertools.count never ends")


class HttpProvider(_Retrying, HTTPProvider):
    """web3's HTTP provider (one session per thread) with our retries instead of web3's."""

    def __init__(self, url: str, timeout: float, retry: RetryPolicy) -> None:
        super().__init__(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        self.url, self.retry = url, retry

    def transient(self, exc: BaseException) -> bool:
        if isinstance(exc, requests.HTTPError):
            return exc.response is not None and exc.response.status_code in HTTP_BUSY
        return isinstance(exc, HTTP_TRANSIENT)


class _WebSocket(JSONBaseProvider):
    """JSON-RPC over one WebSocket, one request at a time (web3 8's WebSocket provider is async
    only). A connection that failed mid-request is dropped, never read from again."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__()
        self.url, self.timeout = url, timeout
        self._ws: ClientConnection | None = None
        self._lock = threading.Lock()

    def _exchange(self, payload: bytes) -> bytes:
        """One request out, its answer back (undecoded)."""
        with self._lock:
            try:
                if self._ws is None:
                    self._ws = ws_connect(self.url, open_timeout=self.timeout, max_size=None, legacy=True)
                self._ws.send(payload.decode())
                answer = self._ws.recv(timeout=self.timeout)
            except BaseException:
                if self._ws is not None:
                    self._ws.close()
                self._ws = None
                raise
        return answer.encode() if isinstance(answer, str) else answer

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return self.decode_rpc_response(self._exchange(self.encode_rpc_request(method, params)))

    def make_batch_request(self, requests_: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        # decode_rpc_response is typed for one response, but parses a batch's JSON list as well
        # (web3's HTTPProvider casts its answer the same way).
        answer = cast(
            "list[RPCResponse] | RPCResponse",
            self.decode_rpc_response(self._exchange(self.encode_batch_rpc_request(requests_))),
        )
        # The ids are web3's request counter (ints), echoed back by the node.
        return sorted(answer, key=lambda r: cast(int, r.get("id", 0))) if isinstance(answer, list) else answer


class WebSocketProvider(_Retrying, _WebSocket):
    def __init__(self, url: str, timeout: float, retry: RetryPolicy) -> None:
        super().__init__(url, timeout)
        self.retry = retry

    def transient(self, exc: BaseException) -> bool:
        return isinstance(exc, WS_TRANSIENT)


class RaiseRpcErrors(Web3Middleware):
    """Every JSON-RPC error answer becomes our RpcError before web3's own error formatters run, so
    callers see one error type (and the raw revert bytes) whichever web3 method they used."""

    def wrap_make_request(self, make_request: MakeRequestFn) -> MakeRequestFn:
        def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
            response = make_request(method, params)
            if "error" in response:
                raise RpcError.from_response(method, response["error"])
            return response

        return middleware


class Rpc:
    """A web3 connection to one RPC URL: HTTP, or a WebSocket for ws:// and wss:// URLs."""

    def __init__(self, url: str, timeout: float = 30.0, retry: RetryPolicy = RetryPolicy()) -> None:
        self.url = check_rpc_url(url)
        ws = url.startswith(("ws://", "wss://"))
        self._provider: HttpProvider | WebSocketProvider = (
            WebSocketProvider(url, timeout, retry) if ws else HttpProvider(url, timeout, retry)
        )
        self.w3 = Web3(self._provider, middleware=[RaiseRpcErrors])

    def call(self, method: str, *params: object) -> Any:
        """One raw JSON-RPC call; returns the unformatted ``result``."""
        return self.w3.manager.request_blocking(RPCEndpoint(method), list(params))

    def batch(self, calls: Sequence[tuple[str, Sequence[object]]]) -> list[Any]:
        """Several calls in one request; an RpcError in a slot is returned, not raised."""
        if not calls:
            return []
        answers = self._provider.make_batch_request([(RPCEndpoint(m), list(p)) for m, p in calls])
        if isinstance(answers, dict):  # the node refused the whole batch
            raise RpcError.from_response(f"batch of {len(calls)}", answers.get("error"))
        return [
            RpcError.from_response(m, a["error"]) if "error" in a else a["result"]
            for (m, _), a in zip(calls, answers, strict=True)
        ]

    def chain_id(self) -> int:
        return self.w3.eth.chain_id

    def block_number(self) -> int:
        return self.w3.eth.block_number

    def block_timestamp(self, block: BlockIdentifier = "latest") -> int:
        return self.w3.eth.get_block(block)["timestamp"]


# ----------------------------------------------------------------------------- revert decoding


class ErrorDecoder:
    """Maps 4-byte selectors of every ABI error (ours, OpenZeppelin's) to name and arguments.

    ``enums`` turns Solidity enum arguments (by their ABI ``internalType``, e.g.
    "enum IConcordTypes.Phase") into the matching Python IntEnum.
    """

    def __init__(self, abis: Iterable[ABI], enums: Mapping[str, type[IntEnum]] | None = None) -> None:
        self._errors: dict[bytes, ABIError] = {
            function_abi_to_4byte_selector(e): e for abi in abis for e in abi if is_error(e)
        }
        self._enums = dict(enums or {})

    def decode(self, data: bytes) -> ContractError:
        sel, body = data[:4], data[4:]
        if sel == ERROR_STRING_SELECTOR:
            return ContractError("Error", {"reason": abi_decode(["string"], body)[0]}, data)
        if sel == PANIC_SELECTOR:
            return ContractError("Panic", {"code": abi_decode(["uint256"], body)[0]}, data)
        if sel in self._errors:
            entry = self._errors[sel]
            values = abi_decode(get_abi_input_types(entry), body)
            params = {
                p["name"] or f"arg{i}": self._typed(p, v)
                for i, (p, v) in enumerate(zip(entry["inputs"], values, strict=True))
            }
            return ContractError(entry["name"], params, data)
        if not data:
            return ContractError("EmptyRevert", {}, data)
        return ContractError("UnknownError", {"selector": "0x" + sel.hex()}, data)

    def _typed(self, param: Mapping[str, Any], value: Any) -> object:
        """``param`` as solc wrote it: its "internalType" is not in eth_typing's ABIComponent."""
        if param.get("internalType") in self._enums:
            return self._enums[param["internalType"]](value)
        return to_checksum_address(value) if param["type"] == "address" else value

    def revert(self, err: RpcError) -> ChainError:
        """The named ContractError when ``err`` carries revert data, else ``err`` itself."""
        data = err.data
        if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
            data = data.get("data") or data.get("result")
        if isinstance(data, str) and data.startswith("0x"):
            return self.decode(bytes.fromhex(data[2:]))
        if "revert" in err.message.lower() and data is None:
            return self.decode(b"")
        return err


# ----------------------------------------------------------------------------- signer


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    block_number: int
    gas_used: int
    status: int
    logs: tuple[LogReceipt, ...] = field(repr=False)  # web3-formatted logs, for Contract.decode_logs
    contract_address: ChecksumAddress | None = None  # set for a deployment

    @staticmethod
    def from_web3(r: TxReceipt) -> Receipt:
        return Receipt(
            r["transactionHash"].to_0x_hex(),
            r["blockNumber"],
            r["gasUsed"],
            r["status"],
            tuple(r["logs"]),
            r.get("contractAddress"),
        )


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

    def __init__(
        self,
        rpc: Rpc,
        account: LocalAccount,
        decoder: ErrorDecoder | None = None,
        gas_margin: float = 1.25,
        receipt_timeout: float = 120.0,
    ) -> None:
        self.rpc = rpc
        self.w3 = rpc.w3
        self.address = to_checksum_address(account.address)
        key = PrivateKey(account.key)  # derived once: LocalAccount re-derives its public key on every sign
        # a closure, so no repr shows the key
        self._sign: Callable[[TransactionDictType], SignedTransaction] = lambda tx: Account.sign_transaction(tx, key)
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

    # The calls on the send path are raw JSON-RPC (through web3's provider): web3's request and
    # result formatters would add a third to the client-side cost of every transaction.

    def estimate_gas(self, to: str | None, data: bytes, value: int = 0) -> int:
        """Gas for the call in the pending state (where it will run); a revert here raises
        ContractError and spends no nonce."""
        tx = {"from": self.address, "data": "0x" + data.hex(), "value": hex(value)} | ({"to": to} if to else {})
        try:
            return int(self.rpc.call("eth_estimateGas", tx, "pending"), 16)
        except RpcError as err:
            raise self.decoder.revert(err) from None

    def _fees(self) -> tuple[int, int]:
        gas_price = int(self.rpc.call("eth_gasPrice"), 16)
        tip = min(gas_price, 10**9)
        return 2 * gas_price + tip, tip

    def send(self, to: str | None, data: bytes, value: int = 0, gas: int | None = None) -> PendingTx:
        """Estimate, sign with the next nonce, broadcast. Re-broadcasts only identical bytes."""
        if gas is None:
            gas = int(self.estimate_gas(to, data, value) * self.gas_margin) + 10_000
        max_fee, tip = self._fees()
        with self._lock:
            if self._nonce is None:
                self._nonce = int(self.rpc.call("eth_getTransactionCount", self.address, "pending"), 16)
            nonce = self._nonce
            tx: TransactionDictType = {
                "chainId": self.chain_id,
                "nonce": nonce,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
                "value": value,
                "data": data,
                "type": 2,
            }
            signed = self._sign(tx if to is None else tx | {"to": HexStr(to)})
            pending = PendingTx(signed.hash.to_0x_hex(), nonce, self.address, to or "", data, value)
            try:
                self.rpc.call("eth_sendRawTransaction", signed.raw_transaction.to_0x_hex())
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
                    raise self.decoder.revert(err) from None
            self._nonce = nonce + 1
        return pending

    def _already_known(self, tx_hash: str, err: RpcError) -> bool:
        msg = err.message.lower()
        if "already known" in msg or "already imported" in msg or "nonce too low" in msg:
            return self.rpc.call("eth_getTransactionByHash", tx_hash) is not None
        return False

    def _receipt(self, tx_hash: str) -> Receipt | None:
        try:
            return Receipt.from_web3(self.w3.eth.get_transaction_receipt(HexStr(tx_hash)))
        except TransactionNotFound:
            return None

    def wait(self, pending: PendingTx, timeout: float | None = None) -> Receipt:
        """Poll for the receipt (soon after sending, then less often; web3's wait polls at one fixed
        rate); a failed transaction raises its decoded ContractError."""
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay, longest = RECEIPT_POLL_S
        while (receipt := self._receipt(pending.tx_hash)) is None:
            if time.monotonic() > deadline:
                raise ReceiptTimeout(pending.tx_hash, timeout)
            time.sleep(delay)
            delay = min(2 * delay, longest)
        if receipt.status != 1:
            raise self._failure(pending, receipt)
        return receipt

    def wait_all(self, pendings: Sequence[PendingTx], timeout: float | None = None) -> list[Receipt]:
        """Receipts for many transactions (fan-outs); the first failure raises."""
        return [self.wait(p, timeout) for p in pendings]

    def _failure(self, pending: PendingTx, receipt: Receipt) -> ChainError:
        """Replay the failed call to recover the revert reason: on the state after its own block first (a
        transaction mined before it in the same block, e.g. another node's finalize of the same round, is
        why it failed; the failed call itself changed nothing), then on the state before its block."""
        tx = {"from": pending.sender, "to": pending.to, "data": "0x" + pending.data.hex(), "value": hex(pending.value)}
        for block in (receipt.block_number, max(receipt.block_number - 1, 0)):
            try:
                self.rpc.call("eth_call", tx, hex(block))
            except RpcError as err:
                decoded = self.decoder.revert(err)
                if isinstance(decoded, ContractError):
                    return decoded
        return TxReverted(pending.tx_hash, receipt.gas_used)

    def transact(self, to: str | None, data: bytes, value: int = 0, gas: int | None = None) -> Receipt:
        return self.wait(self.send(to, data, value, gas))
