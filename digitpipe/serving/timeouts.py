"""Time limits on receiving a request, which uvicorn lacks (its issue #157: `timeout_keep_alive` only runs between
requests and every byte resets it, so a client that sends its headers or body a byte at a time holds a connection as
long as it likes). ASGI middleware cannot help with headers, as it runs only once they are parsed, so the limits live
in uvicorn's h11 protocol: a deadline armed when a connection opens or a request's first byte arrives, moved to the
body's deadline once the headers are parsed (and put off while the app is not reading the body), and dropped once the
request is whole. Past it the client gets a 408 (when nothing was answered yet) and the connection is closed,
freeing its slot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

Owed = Literal["headers", "body"]
LINGER_SECONDS = 2.0  # after a 408, how long what the client still sends is read and dropped before closing


Headers = Callable[[], list[tuple[bytes, bytes]]]
TIMED_OUT = "digitpipe.timed_out"  # set in a request's scope when its body was cut: its handler counts a 408


def receiving_limits(header_seconds: float, body_seconds: float, headers: Headers = list,
                     refused: Callable[[int], None] = lambda status: None) -> type[H11Protocol]:
    """uvicorn's h11 protocol with these time limits, for `uvicorn.Config(http=...)`; the answers it writes itself
    (a 408 for headers too slow, a 400 for a request h11 cannot parse) carry `headers()` (the service's X-Model-*
    headers, as its other replies do) and are counted with `refused(status)`, as the app never sees them."""
    return type("ReceivingLimits", (ReceivingLimits,), {"seconds": {"headers": header_seconds, "body": body_seconds},
                                                         "reply_headers": staticmethod(headers),
                                                         "refused": staticmethod(refused)})


class ReceivingLimits(H11Protocol):
    """H11Protocol whose clients have `seconds["headers"]` to send a request's headers and `seconds["body"]` more
    for its body (use `receiving_limits` to set them)."""

    seconds: dict[Owed, float]  # set by receiving_limits (the defaults live in ServingConfig)
    reply_headers: Headers  # set by receiving_limits (not `headers`: H11Protocol's own, the request's)
    refused: Callable[[int], None]
    _owed: Owed | None = None  # what the armed deadline waits for
    _deadline: asyncio.TimerHandle | None = None
    _lingering = False  # a 408 was sent: what comes now is dropped until the client or LINGER_SECONDS closes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers")  # uvicorn itself sets no limit on a new connection that sends nothing

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()  # a pipelined next request may have been parsed from the buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Keep, move or drop the deadline for what the client owes now: headers, a body, or nothing."""
        state = self.conn.their_state
        if self.transport.is_closing():
            owed = None
        elif state is h11.SEND_BODY:
            owed = "body"
        elif state is h11.IDLE and (self._owed == "headers" or self.conn.trailing_data[0]):
            owed = "headers"  # part of a request's head: the clock runs from its first byte, not from each byte
        else:
            owed = None  # request whole (the app's turn), or idle between requests (uvicorn's keep-alive timeout)
        if owed != self._owed:
            self._arm(owed)

    def _arm(self, owed: Owed | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._owed, self._deadline = owed, None
        if owed is not None:
            self._deadline = self.loop.call_later(self.seconds[owed], self._expired)

    def _expired(self) -> None:
        """The client ran out of time: a 408 if there is a request to answer and no answer began, then close."""
        owed, self._owed, self._deadline = self._owed, None, None
        if self.transport.is_closing():
            return
        if owed == "body" and self.flow.read_paused:
            # uvicorn stopped reading because the app has not read what came (a large body waiting its turn to be
            # parsed): the service is the slow one, so the client is given another period.
            self._arm("body")
            return
        if owed == "body":
            answer = not self.cycle.response_started  # the app may have answered already (a 413) and be draining
            self.cycle.scope[TIMED_OUT] = True
            self.cycle.disconnected = True  # the app's receive() returns http.disconnect, its send() does nothing
            self.cycle.message_event.set()
        else:
            # Answered only if part of a request came: a socket that sent nothing (idle, or a browser's preconnected
            # one) would read a 408 nobody asked for as the answer to its next request; uvicorn closes those silently.
            answer = bool(self.conn.trailing_data[0])
        message = f"request {owed} not received within {self.seconds[owed]:g} s"
        self.logger.info("timed out %s: %s", self.client, message)
        if answer:
            self.transport.write(raw_response(408, "Request Timeout", message, self.reply_headers()))
            if owed == "headers":  # no app saw this request: count it here
                self.refused(408)
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """End our side of the stream and close once the client does, or after LINGER_SECONDS."""
        # Closing a socket that still holds unread bytes (a client still sending its body) sends a reset, which can
        # destroy the 408 before the client reads it; so the bytes are read and dropped a while first.
        self._lingering = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (or headers over its size limit): the one-line JSON of every refusal."""
        self._arm(None)
        self.transport.write(raw_response(400, "Bad Request", msg.rstrip(".") + " (not HTTP/1.1 as h11 reads it)",
                                          self.reply_headers()))
        self.refused(400)
        self.transport.close()


def raw_response(status: int, reason: str, message: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response with `{"error": message}` and `headers` that closes the connection."""
    # Written raw: h11 cannot send a response before it has parsed a request, which slow headers never finish.
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n").encode()
    return head + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
