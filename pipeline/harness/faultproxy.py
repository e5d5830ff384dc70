"""A TCP proxy that damages the bytes it forwards: the harness's fault injector.

It sits between the host client and a device's socket (QEMU's serial port,
a host-built device, a serial-to-TCP bridge) and, byte by byte and
independently in each direction, drops, corrupts, duplicates or delays what
passes through, at configurable rates and from a seeded generator so that a
failing run can be replayed. The client cannot tell it from a noisy cable,
which is the point: the fault tests prove that validation over such a link
still finishes, counts its retries, and accepts no wrong result.

    with FaultProxy("socket://127.0.0.1:4444", FaultConfig(corrupt=0.01)) as url:
        client = DeviceClient(url, retries=30)

Also a command (python -m microfit.harness.faultproxy --help) for manual use
in front of `microfit emulate`.
"""

from __future__ import annotations

import argparse
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from types import TracebackType

from microfit.errors import PortError

_CHUNK = 4096
_UPSTREAM_CONNECT_S = 10.0


@dataclass(frozen=True)
class FaultConfig:
    """Per-byte fault probabilities, each drawn independently for every byte.

    `drop`, `corrupt` and `duplicate` are exclusive outcomes for one byte (so
    their sum must not exceed 1); `delay` is drawn separately and pauses the
    stream before that byte for up to `max_delay_s` (order is kept, as on a
    real link that stalls). A corrupted byte is replaced by a different,
    uniformly drawn value (a 0x00 included, which splits a frame in two).
    `directions` limits the damage to "to_device", "to_host" or "both".
    """

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    max_delay_s: float = 0.005
    seed: int = 0
    directions: str = "both"

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "duplicate", "delay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {name}={value} is not a probability in [0, 1]")
        if self.drop + self.corrupt + self.duplicate > 1.0:
            raise ValueError("drop + corrupt + duplicate must not exceed 1")
        if self.directions not in ("both", "to_device", "to_host"):
            raise ValueError(f"directions must be both, to_device or to_host, not {self.directions!r}")

    def applies_to(self, direction: str) -> bool:
        """Whether bytes flowing in `direction` are damaged."""
        return self.directions in ("both", direction)


@dataclass
class DirectionStats:
    """What one direction of the proxy did to the bytes it carried."""

    bytes_in: int = 0
    bytes_out: int = 0
    dropped: int = 0
    corrupted: int = 0
    duplicated: int = 0
    delayed: int = 0

    @property
    def damaged(self) -> int:
        """Bytes dropped, corrupted or duplicated (delays do not damage)."""
        return self.dropped + self.corrupted + self.duplicated


@dataclass
class ProxyStats:
    """Both directions' counters."""

    to_device: DirectionStats = field(default_factory=DirectionStats)
    to_host: DirectionStats = field(default_factory=DirectionStats)

    def to_dict(self) -> dict[str, dict[str, int]]:
        """JSON-ready counters per direction."""
        return {"to_device": asdict(self.to_device), "to_host": asdict(self.to_host)}


def _parse_upstream(upstream: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(upstream, tuple):
        return upstream
    text = upstream.removeprefix("socket://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"upstream must be socket://HOST:PORT or (host, port), not {upstream!r}")
    return host or "127.0.0.1", int(port)


class FaultProxy:
    """Forward one client connection to `upstream`, damaging bytes per `config`.

    The upstream connection is made when the client connects, so the proxy
    can be started before the device listens. Stats are updated live; read
    them after closing for final figures.
    """

    def __init__(
        self,
        upstream: str | tuple[str, int],
        config: FaultConfig | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.upstream = _parse_upstream(upstream)
        self.config = config or FaultConfig()
        self.stats = ProxyStats()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, listen_port))
        self._listener.listen(1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        """pyserial URL the client should open."""
        return f"socket://{self.host}:{self.port}"

    def start(self) -> str:
        """Begin accepting the client; returns the URL to connect to."""
        thread = threading.Thread(target=self._serve, name="faultproxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self.url

    def _connect_upstream(self) -> socket.socket:
        deadline = time.monotonic() + _UPSTREAM_CONNECT_S
        while True:
            try:
                sock = socket.create_connection(self.upstream, timeout=1.0)
                sock.settimeout(None)
                return sock
            except OSError as exc:
                if time.monotonic() >= deadline or self._closing.is_set():
                    raise PortError(
                        f"fault proxy cannot reach the device at {self.upstream[0]}:"
                        f"{self.upstream[1]}: {exc}"
                    ) from exc
                time.sleep(0.05)

    def _serve(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return  # closed before anyone connected
        try:
            device = self._connect_upstream()
        except PortError as exc:
            self.error = exc
            client.close()
            return
        for sock in (client, device):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets += [client, device]
        seed = self.config.seed
        pumps = (
            (client, device, self.stats.to_device, "to_device", seed * 2 + 1),
            (device, client, self.stats.to_host, "to_host", seed * 2 + 2),
        )
        for src, dst, stats, name, sub_seed in pumps:
            thread = threading.Thread(
                target=self._pump, args=(src, dst, stats, name, random.Random(sub_seed)),
                name=f"faultproxy-{name}", daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _pump(
        self, src: socket.socket, dst: socket.socket, stats: DirectionStats, direction: str,
        rng: random.Random,
    ) -> None:
        cfg = self.config
        damage = cfg.applies_to(direction)
        p_drop = cfg.drop
        p_corrupt = p_drop + cfg.corrupt
        p_dup = p_corrupt + cfg.duplicate
        try:
            while not self._closing.is_set():
                data = src.recv(_CHUNK)
                if not data:
                    break
                stats.bytes_in += len(data)
                if not damage:
                    dst.sendall(data)
                    stats.bytes_out += len(data)
                    continue
                out = bytearray()
                for byte in data:
                    if cfg.delay and rng.random() < cfg.delay:
                        # Send what came before, then stall: order is kept.
                        if out:
                            dst.sendall(out)
                            stats.bytes_out += len(out)
                            out.clear()
                        stats.delayed += 1
                        time.sleep(rng.uniform(0.0, cfg.max_delay_s))
                    r = rng.random()
                    if r < p_drop:
                        stats.dropped += 1
                    elif r < p_corrupt:
                        stats.corrupted += 1
                        out.append((byte + rng.randrange(1, 256)) & 0xFF)
                    elif r < p_dup:
                        stats.duplicated += 1
                        out += bytes((byte, byte))
                    else:
                        out.append(byte)
                if out:
                    dst.sendall(out)
                    stats.bytes_out += len(out)
        except OSError:
            pass
        finally:
            # One side hung up: hang up the other so nobody waits forever.
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop forwarding and close every socket."""
        self._closing.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(2.0)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.url} -> {self.upstream[0]}:{self.upstream[1]}, {self.config})"


def main(argv: list[str] | None = None) -> int:
    """Run a proxy in front of a device socket until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m microfit.harness.faultproxy",
        description="Forward a device's TCP serial port, damaging bytes at the given rates.",
    )
    parser.add_argument("upstream", help="the device, e.g. socket://127.0.0.1:4444")
    parser.add_argument("--port", type=int, default=0, help="local port to listen on (0: any)")
    for name in ("drop", "corrupt", "duplicate", "delay"):
        parser.add_argument(f"--{name}", type=float, default=0.0, help=f"{name} probability per byte")
    parser.add_argument("--max-delay", type=float, default=0.005, help="longest stall in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directions", choices=("both", "to_device", "to_host"), default="both")
    args = parser.parse_args(argv)
    config = FaultConfig(drop=args.drop, corrupt=args.corrupt, duplicate=args.duplicate,
                         delay=args.delay, max_delay_s=args.max_delay, seed=args.seed,
                         directions=args.directions)
    proxy = FaultProxy(args.upstream, config, listen_port=args.port)
    print(f"fault proxy listening on {proxy.start()} -> {args.upstream}", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.close()
        print(proxy.stats.to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
