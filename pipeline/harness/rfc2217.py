"""Serve a local serial port over RFC 2217, so a board on another machine can be validated.

The lab machine with the board runs

    python -m microfit.harness.rfc2217 /dev/ttyACM0 --port 2217

and any other machine validates with `microfit validate RUN --port
rfc2217://labhost:2217`. RFC 2217 (Telnet with COM-port control) carries the
bytes and the port settings (baud rate, purges), which is what the harness
needs; pyserial implements both ends, this module only wires pyserial's
server-side option handling (`serial.rfc2217.PortManager`) to a socket.
ser2net does the same job where it is installed.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from types import TracebackType

import serial
import serial.rfc2217

from microfit.errors import PortError


class _SocketWriter:
    """The `write` PortManager needs for its Telnet replies, on a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


class _LenientLines:
    """A serial port whose modem-control lines may be missing.

    A pty (the host build) has no CTS, DSR, RI or CD, and its ioctls for them
    fail; RFC 2217 reports them to the client all the same. Missing inputs
    read as a connected device's (CTS, DSR and CD up), and setting missing
    outputs (RTS, DTR, break) is ignored.
    """

    _INPUTS = {"cts": True, "dsr": True, "ri": False, "cd": True}
    _OUTPUTS = ("rts", "dtr", "break_condition")

    def __init__(self, port: serial.SerialBase) -> None:
        object.__setattr__(self, "_port", port)

    def __getattr__(self, name: str) -> object:
        if name in self._INPUTS:
            try:
                return getattr(self._port, name)
            except OSError:
                return self._INPUTS[name]
        return getattr(self._port, name)

    def __setattr__(self, name: str, value: object) -> None:
        try:
            setattr(self._port, name, value)
        except OSError:
            if name not in self._OUTPUTS:
                raise


class Rfc2217Server:
    """Serve the serial port `port_url` (any pyserial URL) to one client at a time.

    Entering the context yields the client URL, rfc2217://HOST:PORT.
    """

    def __init__(self, port_url: str, host: str = "127.0.0.1", tcp_port: int = 0,
                 baud: int = 115200) -> None:
        try:
            self.serial = serial.serial_for_url(port_url, baudrate=baud, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(f"cannot open {port_url} to serve it over RFC 2217: {exc}") from exc
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, tcp_port))
        self.listener.listen(1)
        self.host, self.port = self.listener.getsockname()[:2]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """What a client opens."""
        return f"rfc2217://{self.host}:{self.port}"

    def start(self) -> str:
        """Accept clients in the background; returns the client URL."""
        thread = threading.Thread(target=self._accept_loop, name="rfc2217-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self.url

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        manager = serial.rfc2217.PortManager(_LenientLines(self.serial), _SocketWriter(conn))
        done = threading.Event()

        def to_client() -> None:
            while not done.is_set() and not self._stop.is_set():
                try:
                    data = self.serial.read(self.serial.in_waiting or 1)
                    if data:
                        conn.sendall(b"".join(manager.escape(data)))
                except (OSError, serial.SerialException):
                    break
            done.set()

        pump = threading.Thread(target=to_client, name="rfc2217-to-client", daemon=True)
        pump.start()
        try:
            while not done.is_set() and not self._stop.is_set():
                data = conn.recv(4096)
                if not data:
                    break
                payload = b"".join(manager.filter(data))
                if payload:
                    self.serial.write(payload)
        except OSError:
            pass
        finally:
            done.set()
            pump.join(1.0)
            conn.close()

    def close(self) -> None:
        """Stop serving and close the port."""
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(1.0)
        self.serial.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """Serve a serial port over RFC 2217 until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m microfit.harness.rfc2217",
                                     description="Serve a serial port over RFC 2217.")
    parser.add_argument("device", help="the board's port, e.g. /dev/ttyACM0")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--port", type=int, default=2217, help="TCP port (default 2217)")
    parser.add_argument("--baud", type=int, default=115200)
    args = parser.parse_args(argv)
    server = Rfc2217Server(args.device, args.host, args.port, args.baud)
    print(f"serving {args.device} at {server.start()}", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
