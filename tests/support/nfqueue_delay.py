"""Hold every packet of one NFQUEUE queue for a fixed time, then accept it.

This kernel has no ``sch_netem``; an iptables ``-j NFQUEUE`` rule plus this
daemon gives a link its propagation delay. It speaks nfnetlink_queue over a
raw netlink socket (no library): bind the queue, ask for packet metadata
only, and send an ``NF_ACCEPT`` verdict ``--delay-ms`` after each packet
arrived, in arrival order. Run it inside the network namespace whose rule
feeds the queue (netlink sockets belong to a namespace)::

    ip netns exec NS python nfqueue_delay.py --queue 0 --delay-ms 300

It prints ``ready`` once bound and runs until SIGTERM (or ``--seconds``).
"""

from __future__ import annotations

import argparse
import collections
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _message(msg_type: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, 0, 0)
    return header + body


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return out


def open_queue(queue: int, maxlen: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    sock.bind((0, 0))
    cmd = struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, socket.htons(socket.AF_INET))
    params = struct.pack("!IB", 0, NFQNL_COPY_META) + b"\0\0\0"
    for attrs in (
        _attr(NFQA_CFG_CMD, cmd),
        _attr(NFQA_CFG_PARAMS, params[:5])
        + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)),
    ):
        sock.send(_message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK))
        reply = sock.recv(65536)
        _, kind = struct.unpack_from("=IH", reply, 0)
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", reply, 16)
            if errno != 0:
                raise OSError(-errno, f"nfqueue config refused: {os.strerror(-errno)}")
    return sock


def run(queue: int, delay_s: float, seconds: float | None, maxlen: int) -> None:
    sock = open_queue(queue, maxlen)
    sock.setblocking(False)
    held: collections.deque[tuple[float, int]] = collections.deque()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("ready", flush=True)
    end = None if seconds is None else time.monotonic() + seconds
    while not stop and (end is None or time.monotonic() < end):
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, packet_id = held.popleft()
            verdict = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
            sock.send(_message(NFQNL_MSG_VERDICT, queue, verdict))
        wait = 0.5 if not held else max(0.0, held[0][0] - now)
        try:
            readable, _, _ = select.select([sock], [], [], wait)
        except InterruptedError:
            continue
        if not readable:
            continue
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                break
            arrived = time.monotonic()
            pos = 0
            while pos + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, pos)
                if length < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    hdr = _attrs(data[pos + 20 : pos + length]).get(NFQA_PACKET_HDR)
                    if hdr is not None:
                        (packet_id,) = struct.unpack_from("!I", hdr, 0)
                        held.append((arrived + delay_s, packet_id))
                pos += (length + 3) & ~3
    # Let whatever is held through rather than strand it.
    for _, packet_id in held:
        verdict = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
        try:
            sock.send(_message(NFQNL_MSG_VERDICT, queue, verdict))
        except OSError:
            break
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=None, help="stop by itself after this")
    parser.add_argument("--maxlen", type=int, default=20000)
    args = parser.parse_args()
    try:
        run(args.queue, args.delay_ms / 1000.0, args.seconds, args.maxlen)
    except OSError as exc:
        print(f"nfqueue_delay: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
