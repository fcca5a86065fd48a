"""Content store: manifests and files in IPFS over the Kubo RPC API, every byte checked (DESIGN §4).

Works against any Kubo-RPC endpoint by multiaddr (the devnet's js-ipfs, or a Kubo node).
What the network hands back is never trusted: each fetch has a timeout, a size limit
checked before the download starts and again while streaming, and a sha256 check before
the bytes reach their final path (temp file + rename). A local cache keyed by sha256
answers repeated fetches without the network.

Bounded fetches (issue 10). A file is read block by block, never streamed with ``cat``:
every request is a ``block/get`` of one block whose size the store knows before asking
(a raw leaf: the size its parent lists; a dag-pb node: its ``block/stat``, at most
MAX_NODE_BYTES), and every block is checked against the sha256 in its CID. A missing or
slow block is therefore one clean ``ContentNotFound`` naming that block, never a
half-read stream. A caller may pass a ``deadline`` (``time.monotonic()`` value) that
bounds the whole fetch; each request's timeout is the smaller of the store timeout and
the time left, bytes are taken as they arrive (a provider that drips them is cut at the
deadline), and the daemon is always given its own timeout shorter than the client's
(REQUEST_GRACE), so the daemon ends a request for a missing block itself.

Why never ``cat``: js-ipfs 0.66.1 exits ("Error: Want for <leaf> aborted", unhandled, from
ipfs-bitswap) when a ``cat`` of a file with a missing leaf ends, by its own ``timeout``
option or by the client hanging up; a ``block/get`` of the same leaf ended either way is a
clean error and the daemon lives (tests/test_availability.py pins both).

Daemon quirks this module relies on (checked against js-ipfs 0.66.1 / "0.18.1"):
  * block/put takes the legacy ``format=raw`` (it silently ignores ``cid-codec`` and
    would return a dag-pb CIDv0); Kubo still accepts ``format=raw`` and returns the same
    CIDv1 raw address, so one request works on both.
  * a missing CID makes stat/get hang, so every read carries the daemon-side ``timeout``
    option and a client-side timeout REQUEST_GRACE longer.
  * CIDs come back in base58 unless ``cid-base=base32`` is asked for; we normalise anyway.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

import ipfshttpclient.exceptions as ipfs_errors
import requests
import urllib3
from ipfshttpclient import multipart
from ipfshttpclient.http import ClientSync
from multiformats import CID

from concord.client import timing
from concord.client.content.manifest import (
    MAX_MANIFEST_BYTES,
    ManifestError,
    ShardRef,
    canonical_cid,
    cid_for_digest,
    digest_of,
    parse_canonical,
)
from concord.client.digest import Digest

log = logging.getLogger(__name__)
# ipfshttpclient passes urllib3 a `strict` argument that urllib3 2 warns about on every first request:
# noise on every command's stderr, not something an operator can act on.
warnings.filterwarnings("ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning)

T = TypeVar("T")

CHUNKER = "size-1048576"  # fixed (not the daemon default) so every node derives the same CID; Kubo's max
HTTP_CHUNK = 1 << 20  # multipart upload chunk: 4 KiB (the client default) costs ~3x in put speed
READ_BLOCK = 1 << 20
MIN_RATE = 1_000_000  # bytes/s a download must average; with the timeout, bounds its total time
REQUEST_GRACE = 2.0  # the client waits this much longer than the daemon-side timeout it asks for
MAX_NODE_BYTES = MAX_MANIFEST_BYTES  # a dag-pb node of a file (one block; 174 links take ~8 KiB)
MAX_DAG_DEPTH = 8  # levels of dag-pb nodes above the leaves (1 MiB leaves, 174 links: 3 levels = 5 TiB)
PROBE_BLOCK = b'{"kind":"concord-probe"}'  # canonical JSON: put and read back by Store.probe
RAW_CODEC, DAG_PB_CODEC = 0x55, 0x70
UNIXFS_RAW, UNIXFS_FILE = 0, 2  # UnixFS Data.DataType values a file's nodes may carry


class StoreError(Exception):
    """Base for content-store failures; the message is one line naming the CID or address."""


class StoreUnavailable(StoreError):
    def __init__(self, api: str, attempts: int, reason: str) -> None:
        super().__init__(
            f"IPFS API {api} unreachable after {attempts} attempt(s) ({reason}): "
            "start the daemon (`concord devnet up`) or pass the right API address"
        )
        self.api = api
        self.attempts = attempts
        self.reason = reason


class ContentNotFound(StoreError):
    def __init__(self, cid: str, timeout: float, expected: str) -> None:
        super().__init__(f"{cid} not found within {timeout:g}s (expected {expected})")
        self.cid = cid
        self.timeout = timeout
        self.expected = expected


class DeadlineExceeded(ContentNotFound):
    """The fetch's deadline passed before all of its blocks were in (a slow or stalled provider)."""

    def __init__(self, cid: str, budget: float, expected: str) -> None:
        super().__init__(cid, budget, f"{expected}; deadline of {budget:g}s passed")


class ContentMismatch(StoreError):
    """The bytes behind a CID are not the ones the reference promised."""


class MalformedDag(ContentMismatch):
    """A file's dag-pb node is not a UnixFS file node this store reads (wrong type, counts, depth, sizes)."""

    def __init__(self, cid: str, reason: str) -> None:
        super().__init__(f"{cid}: not a UnixFS file node: {reason}")
        self.cid = cid
        self.reason = reason


class DigestMismatch(ContentMismatch):
    def __init__(self, cid: str, expected: str, got: str) -> None:
        super().__init__(f"{cid}: sha256 mismatch, expected {expected}, got {got}")
        self.cid = cid
        self.expected = expected
        self.got = got


class SizeMismatch(ContentMismatch):
    def __init__(self, cid: str, expected: int, got: int) -> None:
        super().__init__(f"{cid}: size mismatch, expected {expected} bytes, got {got}")
        self.cid = cid
        self.expected = expected
        self.got = got


class CidMismatch(ContentMismatch):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"daemon stored the bytes as {got}, expected {expected}")
        self.expected = expected
        self.got = got


class SizeLimitExceeded(StoreError):
    def __init__(self, cid: str, size: int, limit: int) -> None:
        super().__init__(f"{cid} is {size} bytes, over the {limit}-byte limit: refused before download")
        self.cid = cid
        self.size = size
        self.limit = limit


class DaemonError(StoreError):
    def __init__(self, api: str, what: str, message: str) -> None:
        super().__init__(f"IPFS API {api}: {what} failed: {message}")
        self.api = api
        self.what = what
        self.message = message


def api_multiaddr(api: str) -> str:
    """Accept a multiaddr (``/ip4/127.0.0.1/tcp/5001/http``) or a URL (``http://127.0.0.1:5001``)."""
    if api.startswith("/"):
        return api
    url = urllib.parse.urlsplit(api)
    if url.scheme not in ("http", "https") or not url.hostname or not url.port:
        raise ValueError(f"IPFS API address {api!r}: expected a multiaddr or http://host:port")
    host = url.hostname
    proto = "ip6" if ":" in host else "ip4" if re.fullmatch(r"[0-9.]+", host) else "dns"
    return f"/{proto}/{host}/tcp/{url.port}/{url.scheme}"


def api_url(multiaddr: str) -> str:
    """``/ip4/H/tcp/P/http`` (or ip6, dns, https) -> ``http://H:P/api/v0``, the RPC base URL."""
    parts = multiaddr.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or parts[2] != "tcp":
        raise ValueError(f"IPFS API address {multiaddr!r}: expected /ip4|ip6|dns/HOST/tcp/PORT[/http|https]")
    scheme = parts[4] if len(parts) > 4 and parts[4] in ("http", "https") else "http"
    host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
    return f"{scheme}://{host}:{parts[3]}/api/v0"


def _error_message(resp: requests.Response) -> str:
    """The daemon's error text ({"Message": ...}), or the start of the body."""
    try:
        return str(resp.json().get("Message", ""))[:300] or f"HTTP {resp.status_code}"
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"


def _short_reason(err: BaseException) -> str:
    text = str(err)
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return match.group(0) if match else text[:120]


def _duration(seconds: float) -> str:
    return f"{max(1, int(seconds * 1000))}ms"  # Go and js-ipfs both parse "ms" durations


def _is_daemon_timeout(err: ipfs_errors.ErrorResponse | str) -> bool:
    """The daemon's way of saying it does not have the content: its timeout ran out (js-ipfs, Kubo
    online) or an offline Kubo's "block was not found locally"."""
    text = str(err).lower()
    return (
        "timed out" in text
        or "deadline exceeded" in text
        or "timeout" in text
        or "not found locally" in text
        or "could not find" in text
    )


class _HashingReader(io.RawIOBase):
    """A file wrapper that hashes and counts what the upload actually read."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class Store:
    """A Kubo-RPC connection plus a local cache; the state worth a class (DESIGN STYLE)."""

    def __init__(
        self, api: str, cache_dir: Path | str | None, timeout: float = 30.0, retries: int = 5, backoff: float = 0.25
    ) -> None:
        self.api = api_multiaddr(api)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._http = ClientSync(self.api, "api/v0")
        self._url = api_url(self.api)
        self._local = threading.local()  # one keep-alive HTTP session per thread for block reads

    # ------------------------------------------------------------------------- manifests

    def put_manifest(self, data: bytes, pin: bool = True) -> Digest:
        """Store canonical manifest bytes as one raw block; return their sha256, the on-chain digest."""
        parse_canonical(data)  # only canonical JSON objects are manifests
        digest = digest_of(data)
        expected = cid_for_digest(digest)
        opts = {"format": "raw", "mhtype": "sha2-256", "cid-base": "base32", "pin": str(pin).lower()}

        def put() -> Any:
            body, headers = multipart.stream_bytes(data, chunk_size=HTTP_CHUNK)
            return self._http.request(
                "/block/put", opts=opts, decoder="json", data=body, headers=headers, timeout=self.timeout
            )

        resp = self._call("block/put", put)
        got = self._response_cid(resp, "Key", "block/put")
        if got != expected:
            raise CidMismatch(expected, got)
        self._cache_put(digest.hex(), data)
        return digest

    def get_manifest(
        self, digest: Digest | bytes | str, max_bytes: int = MAX_MANIFEST_BYTES, deadline: float | None = None
    ) -> bytes:
        """The bytes whose sha256 is ``digest`` (anything Digest.parse takes), fetched by the CID derived
        from it (before ``deadline``)."""
        digest = Digest.parse(digest)
        cid = cid_for_digest(digest)
        cached = self._cache_read(digest.hex(), max_bytes)
        if cached is not None:
            return cached
        expected = f"sha256 {digest}, at most {max_bytes} bytes"
        if deadline is None:
            deadline = time.monotonic() + 2 * self.timeout  # one stat, one get
        size = self._stat_block(cid, expected, deadline)
        if size > max_bytes:
            raise SizeLimitExceeded(cid, size, max_bytes)
        data = self._get_block(cid, size, expected, deadline)  # sha256 = the CID's = digest
        self._cache_put(digest.hex(), data)
        return data

    # ------------------------------------------------------------------------- files

    def put_file(self, src: Path | str | bytes, name: str | None = None, pin: bool = True) -> ShardRef:
        """Add a file (CIDv1, raw leaves, 1 MiB chunks, pinned); its sha256 and size come from what was sent."""
        if isinstance(src, (bytes, bytearray, memoryview)):
            if name is None:
                raise ValueError("put_file(bytes) needs a name for the ShardRef")
            data = bytes(src)

            def open_src() -> BinaryIO:
                return io.BytesIO(data)
        else:
            path = Path(src)
            name = path.name if name is None else name

            def open_src() -> BinaryIO:
                return open(path, "rb")

        opts = {
            "cid-version": "1",
            "raw-leaves": "true",
            "chunker": CHUNKER,
            "hash": "sha2-256",
            "pin": str(pin).lower(),
            "cid-base": "base32",
            "wrap-with-directory": "false",
        }
        sent: dict[str, _HashingReader] = {}

        def add() -> Any:
            with open_src() as raw:
                reader = _HashingReader(raw)
                sent["reader"] = reader
                body, headers = multipart.stream_files(reader, chunk_size=HTTP_CHUNK)
                return self._http.request(
                    "/add", opts=opts, decoder="json", data=body, headers=headers, timeout=self.timeout
                )

        resp = self._call("add", add)
        cid = self._response_cid(resp, "Hash", "add")
        reader = sent["reader"]
        ref = ShardRef(name=name, cid=cid, sha256=reader.sha.hexdigest(), size=reader.size)
        if reader.size <= int(CHUNKER.split("-")[1]) and cid != cid_for_digest(ref.sha256):
            # One chunk with raw leaves is a single raw block: its CID is derivable, so check it.
            raise CidMismatch(cid_for_digest(ref.sha256), cid)
        return ref

    def get_file(self, ref: ShardRef, dest: Path | str, max_bytes: int, deadline: float | None = None) -> Path:
        """Fetch ``ref`` to ``dest`` (before ``deadline``): size-checked before, sha256-checked after, never a
        partial file at dest."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if ref.size > max_bytes:
            raise SizeLimitExceeded(ref.cid, ref.size, max_bytes)
        tmp = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False)
        tmp_path = Path(tmp.name)
        try:
            with tmp:
                from_cache = self._cache_copy(ref, tmp)
                if not from_cache:
                    self._fetch_file(ref, max_bytes, tmp, deadline)
            if not from_cache:
                self._cache_link(ref.sha256, tmp_path)
            os.replace(tmp_path, dest)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        return dest

    def get_bytes(self, ref: ShardRef, max_bytes: int, deadline: float | None = None) -> bytes:
        """``get_file`` into memory, for small files (rollouts, proofs, delta shards)."""
        if ref.size > max_bytes:
            raise SizeLimitExceeded(ref.cid, ref.size, max_bytes)
        cached = self._cache_read(ref.sha256, max_bytes)
        if cached is not None:
            return cached
        buf = io.BytesIO()
        self._fetch_file(ref, max_bytes, buf, deadline)
        self._cache_put(ref.sha256, buf.getvalue())
        return buf.getvalue()

    def probe(self) -> None:
        """Put one small block and read it back past the cache: returns when the daemon answers for
        content, raises StoreError (ContentNotFound, DaemonError, StoreUnavailable) when it does not."""
        data = PROBE_BLOCK
        digest = self.put_manifest(data, pin=False)
        got = self._get_block(cid_for_digest(digest), len(data), "the probe block", time.monotonic() + self.timeout)
        if got != data:
            raise DigestMismatch(cid_for_digest(digest), expected=str(digest), got=str(digest_of(got)))

    def pin(self, cid: str) -> None:
        """Keep ``cid`` (recursively) through the daemon's garbage collection."""
        cid = canonical_cid(cid)
        resp = self._call("pin/add", lambda: self._read("/pin/add", cid, "content to pin", decoder="json"))
        pins = {canonical_cid(p) for item in resp for p in item.get("Pins", [])}
        if cid not in pins:
            raise DaemonError(self.api, "pin/add", f"{cid} not in the daemon's answer {sorted(pins)}")

    def is_pinned(self, cid: str) -> bool:
        cid = canonical_cid(cid)
        try:
            resp = self._call(
                "pin/ls",
                lambda: self._http.request(
                    "/pin/ls",
                    (cid,),
                    opts={"type": "recursive", "timeout": _duration(self.timeout)},
                    decoder="json",
                    timeout=self.timeout + 2,
                ),
            )
        except DaemonError as e:
            if "not pinned" in e.message:
                return False
            raise
        return any(canonical_cid(k) == cid for item in resp for k in item.get("Keys", {}))

    # ------------------------------------------------------------------------- internals

    def _fetch_file(self, ref: ShardRef, max_bytes: int, out: IO[bytes], deadline: float | None) -> None:
        """Write the file ``ref`` to ``out`` block by block (module docstring); sha256 of the whole checked."""
        if ref.size > max_bytes:
            raise SizeLimitExceeded(ref.cid, ref.size, max_bytes)
        if deadline is None:  # alone (not part of a submission): the store's own rate rule
            deadline = time.monotonic() + self.timeout + ref.size / MIN_RATE
        expected = f"sha256 {ref.sha256}, {ref.size} bytes"
        sha = hashlib.sha256()
        start = out.tell()
        root = _decode_cid(ref.cid)
        if root.codec.code == RAW_CODEC:  # one chunk: the file is one raw block of ref.size bytes
            self._write_block(self._get_block(ref.cid, ref.size, expected, deadline), out, sha)
        else:
            node = self._get_node(ref.cid, expected, deadline)
            if node.filesize > max_bytes:
                raise SizeLimitExceeded(ref.cid, node.filesize, max_bytes)
            if node.filesize != ref.size:
                raise SizeMismatch(ref.cid, expected=ref.size, got=node.filesize)
            self._write_tree(ref.cid, node, ref.size, expected, deadline, out, sha, depth=0)
        out.flush()
        written = out.tell() - start
        if written != ref.size:
            raise SizeMismatch(ref.cid, expected=ref.size, got=written)
        if sha.hexdigest() != ref.sha256:
            raise DigestMismatch(ref.cid, expected=ref.sha256, got=sha.hexdigest())

    def _write_tree(
        self, cid: str, node: _FileNode, size: int, expected: str, deadline: float, out: IO[bytes], sha: Any, depth: int
    ) -> None:
        """The ``size`` bytes under dag-pb ``node`` (block ``cid``), children in link order."""
        if node.filesize != size:
            raise MalformedDag(cid, f"filesize {node.filesize}, its parent lists {size}")
        if not node.links:
            self._write_block(node.data, out, sha)
            return
        if depth >= MAX_DAG_DEPTH:
            raise MalformedDag(cid, f"deeper than {MAX_DAG_DEPTH} levels")
        for child, child_size in zip(node.links, node.blocksizes, strict=True):
            child_cid = str(child.set(base="base32"))
            if child.codec.code == RAW_CODEC:  # a raw leaf: its block size is what the parent lists
                self._write_block(self._get_block(child_cid, child_size, expected, deadline), out, sha)
            else:
                self._write_tree(
                    child_cid,
                    self._get_node(child_cid, expected, deadline),
                    child_size,
                    expected,
                    deadline,
                    out,
                    sha,
                    depth + 1,
                )

    @staticmethod
    def _write_block(data: bytes, out: IO[bytes], sha: Any) -> None:
        sha.update(data)
        out.write(data)

    def _get_node(self, cid: str, expected: str, deadline: float) -> _FileNode:
        """A dag-pb file node: its size from block/stat (at most MAX_NODE_BYTES), then the block, parsed."""
        size = self._stat_block(cid, expected, deadline)
        if size > MAX_NODE_BYTES:
            raise MalformedDag(cid, f"node of {size} bytes, over {MAX_NODE_BYTES}")
        return _parse_file_node(cid, self._get_block(cid, size, expected, deadline))

    def _stat_block(self, cid: str, expected: str, deadline: float) -> int:
        timeout = self._time_left(cid, expected, deadline)
        stat = self._call(
            "block/stat", lambda: self._read("/block/stat", cid, expected, decoder="json", timeout=timeout)
        )
        return int(self._single(stat, "block/stat")["Size"])

    def _get_block(self, cid: str, size: int, expected: str, deadline: float) -> bytes:
        """One block of exactly ``size`` bytes whose sha256 is the one in its CID."""
        buf = io.BytesIO()

        def fetch() -> str:
            buf.seek(0)
            buf.truncate()
            return self._download("/block/get", cid, size, expected, buf, deadline)

        got = self._call("block/get", fetch)
        if buf.tell() != size:
            raise SizeMismatch(cid, expected=size, got=buf.tell())
        want = _decode_cid(cid).raw_digest.hex()
        if got != want:
            raise DigestMismatch(cid, expected=want, got=got)
        return buf.getvalue()

    def _session(self) -> requests.Session:
        """This thread's HTTP session (connections kept alive between the blocks of a fetch)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _time_left(self, cid: str, expected: str, deadline: float) -> float:
        """This request's timeout: the store's, or less when the deadline is nearer."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(cid, self.timeout, expected)
        return min(self.timeout, left)

    def _read(
        self, path: str, arg: str, expected: str, decoder: str, cid: str | None = None, timeout: float | None = None
    ) -> Any:
        """A small request for possibly-missing content: daemon-side and client-side timeouts."""
        cid = cid or arg
        timeout = self.timeout if timeout is None else timeout
        try:
            return self._http.request(
                path, (arg,), opts={"timeout": _duration(timeout)}, decoder=decoder, timeout=timeout + REQUEST_GRACE
            )
        except ipfs_errors.TimeoutError:
            raise ContentNotFound(cid, timeout, expected) from None
        except ipfs_errors.ErrorResponse as e:
            if _is_daemon_timeout(e):
                raise ContentNotFound(cid, timeout, expected) from None
            raise

    def _download(self, path: str, cid: str, size: int, expected: str, out: BinaryIO, deadline: float) -> str:
        """Stream one block into ``out``; return the sha256 (hex) of what came. Refuses more than ``size``
        bytes, a stalled stream, and a total time past ``deadline``: bytes are taken as they arrive
        (``read1``), so a provider that drips them is cut at the deadline, not when it is done."""
        timeout = self._time_left(cid, expected, deadline)
        sha = hashlib.sha256()
        try:
            with self._session().post(
                f"{self._url}{path}",
                params={"arg": cid, "timeout": _duration(timeout)},
                stream=True,
                timeout=timeout + REQUEST_GRACE,
            ) as resp:
                if resp.status_code != 200:
                    message = _error_message(resp)
                    if _is_daemon_timeout(message):
                        raise ContentNotFound(cid, timeout, expected)
                    raise DaemonError(self.api, path.strip("/"), message)
                received = 0
                while chunk := resp.raw.read1(READ_BLOCK):
                    received += len(chunk)
                    if received > size:
                        raise SizeMismatch(cid, expected=size, got=received)
                    sha.update(chunk)
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise DeadlineExceeded(cid, timeout, f"{expected}; download too slow")
        except (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError):
            raise ContentNotFound(cid, timeout, f"{expected}; no answer or stream stalled") from None
        except (
            requests.exceptions.ConnectionError,
            urllib3.exceptions.ProtocolError,
            requests.exceptions.ChunkedEncodingError,
        ) as e:
            if any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in e.args):
                raise ContentNotFound(cid, timeout, f"{expected}; stream stalled") from None
            raise ipfs_errors.ConnectionError(e) from e  # _call retries: the daemon may be restarting
        if time.monotonic() > deadline:
            raise DeadlineExceeded(cid, timeout, f"{expected}; download too slow")
        return sha.hexdigest()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one RPC with bounded retries on connection errors, so a restarted daemon is picked up."""
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                with timing.span("ipfs"):
                    return fn()
            except ipfs_errors.ConnectionError as e:
                if attempt == self.retries:
                    raise StoreUnavailable(self.api, attempt, _short_reason(e)) from None
                log.warning(
                    "IPFS %s at %s failed (%s); retry %d/%d in %.2fs",
                    what,
                    self.api,
                    _short_reason(e),
                    attempt,
                    self.retries - 1,
                    delay,
                )
                time.sleep(delay)
                delay *= 2
            except ipfs_errors.TimeoutError as e:
                raise DaemonError(self.api, what, f"no answer within {self.timeout:g}s ({_short_reason(e)})") from None
            except ipfs_errors.ErrorResponse as e:
                raise DaemonError(self.api, what, str(e)) from None
            except ipfs_errors.CommunicationError as e:
                raise DaemonError(self.api, what, _short_reason(e)) from None
        raise AssertionError("unreachable")

    def _single(self, resp: Any, what: str) -> dict[str, Any]:
        items = resp if isinstance(resp, list) else [resp]
        if len(items) != 1 or not isinstance(items[0], dict):
            raise DaemonError(self.api, what, f"unexpected answer {str(resp)[:120]}")
        return items[0]

    def _response_cid(self, resp: Any, key: str, what: str) -> str:
        items = resp if isinstance(resp, list) else [resp]
        found = [item[key] for item in items if isinstance(item, dict) and key in item]
        if len(found) != 1:
            raise DaemonError(self.api, what, f"expected one {key} in the answer, got {str(resp)[:120]}")
        try:
            return canonical_cid(found[0], key)
        except ManifestError as e:
            raise DaemonError(self.api, what, str(e)) from None

    # ------------------------------------------------------------------------- cache (keyed by sha256)

    def _cache_path(self, sha256: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / sha256

    def _cache_read(self, sha256: str, max_bytes: int) -> bytes | None:
        path = self._cache_path(sha256)
        if path is None or not path.is_file() or path.stat().st_size > max_bytes:
            return None
        data = path.read_bytes()
        if digest_of(data).hex() != sha256:
            log.warning("cache entry %s is corrupt; dropping it and fetching again", path)
            path.unlink(missing_ok=True)
            return None
        return data

    def _cache_copy(self, ref: ShardRef, out: IO[bytes]) -> bool:
        """Copy a verified cache entry into ``out``; False (and ``out`` empty) on a miss or a corrupt entry."""
        path = self._cache_path(ref.sha256)
        if path is None or not path.is_file() or path.stat().st_size != ref.size:
            return False
        sha = hashlib.sha256()
        with open(path, "rb") as src:
            while chunk := src.read(READ_BLOCK):
                sha.update(chunk)
                out.write(chunk)
        if sha.hexdigest() != ref.sha256:
            log.warning("cache entry %s is corrupt; dropping it and fetching again", path)
            path.unlink(missing_ok=True)
            out.seek(0)
            out.truncate()
            return False
        return True

    def _cache_put(self, sha256: str, data: bytes) -> None:
        path = self._cache_path(sha256)
        if path is None or path.exists():
            return
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{sha256}.", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)

    def _cache_link(self, sha256: str, verified: Path) -> None:
        """Put a verified file in the cache: a hard link when possible (no copy), else a copy."""
        path = self._cache_path(sha256)
        if path is None or path.exists():
            return
        staged = path.parent / f".{sha256}.{os.getpid()}.link"
        try:
            os.link(verified, staged)
        except OSError:
            shutil.copyfile(verified, staged)
        os.replace(staged, path)


# ----------------------------------------------------------------------------- dag-pb / UnixFS (read side)


@dataclass(frozen=True)
class _FileNode:
    """A UnixFS file node: its children (in order) with their content sizes, or its inline data."""

    links: tuple[CID, ...]
    blocksizes: tuple[int, ...]  # content bytes under each link
    data: bytes  # inline content (a node without links)
    filesize: int


def _decode_cid(cid: str | bytes) -> CID:
    """A CIDv1 sha2-256 raw or dag-pb CID (text or binary); anything else is the submitter's error."""
    try:
        parsed = CID.decode(cid)
    except (ValueError, KeyError) as e:
        raise MalformedDag(str(cid), f"not a CID: {e}") from None
    if (
        parsed.version != 1
        or parsed.hashfun.name != "sha2-256"
        or len(parsed.raw_digest) != 32
        or parsed.codec.code not in (RAW_CODEC, DAG_PB_CODEC)
    ):
        raise MalformedDag(str(cid), "expected a CIDv1 raw or dag-pb CID with a sha2-256 multihash")
    return parsed


def _varint(buf: bytes, pos: int, cid: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise MalformedDag(cid, "truncated or oversized varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields_of(buf: bytes, cid: str) -> Iterator[tuple[int, int, int | bytes]]:
    """Protobuf fields (number, wire type, value): varints as int, length-delimited as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, cid)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, cid)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, cid)
            if pos + length > len(buf):
                raise MalformedDag(cid, "truncated field")
            yield number, wire, buf[pos : pos + length]
            pos += length
        else:
            raise MalformedDag(cid, f"unexpected protobuf wire type {wire}")


def _parse_file_node(cid: str, block: bytes) -> _FileNode:
    """dag-pb PBNode {Links = 2 (PBLink {Hash = 1}), Data = 1 (UnixFS {Type = 1, Data = 2, filesize = 3,
    blocksizes = 4})}; a file node only (type File or Raw), one blocksize per link."""
    # _fields_of gives a varint (wire type 0) as int and a length-delimited field (wire type 2) as bytes,
    # so the isinstance checks below are the wire-type checks.
    links: list[CID] = []
    unixfs = b""
    for number, _, value in _fields_of(block, cid):
        if number == 2 and isinstance(value, bytes):
            hashes = [v for n, _, v in _fields_of(value, cid) if n == 1 and isinstance(v, bytes)]
            if len(hashes) != 1:
                raise MalformedDag(cid, f"link {len(links)} has {len(hashes)} hashes")
            links.append(_decode_cid(bytes(hashes[0])))
        elif number == 1 and isinstance(value, bytes):
            unixfs = bytes(value)
    kind: int | None = None
    data = b""
    filesize: int | None = None
    sizes: list[int] = []
    for number, _, value in _fields_of(unixfs, cid):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, bytes):
            data = bytes(value)
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4 and isinstance(value, int):
            sizes.append(value)
        elif number == 4 and isinstance(value, bytes):  # packed repeated uint64
            pos = 0
            while pos < len(value):
                size, pos = _varint(value, pos, cid)
                sizes.append(size)
    if kind not in (UNIXFS_RAW, UNIXFS_FILE):
        raise MalformedDag(cid, f"UnixFS type {kind}, expected a file")
    if len(sizes) != len(links):
        raise MalformedDag(cid, f"{len(links)} links but {len(sizes)} block sizes")
    if links and data:
        raise MalformedDag(cid, "inline data beside links")
    total = sum(sizes) if links else len(data)
    if filesize is None:
        filesize = total
    if filesize != total:
        raise MalformedDag(cid, f"filesize {filesize}, its parts hold {total}")
    return _FileNode(tuple(links), tuple(sizes), data, filesize)
