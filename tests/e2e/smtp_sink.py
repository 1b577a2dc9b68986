#!/usr/bin/env python3
"""A minimal SMTP sink for Kyso's end-to-end test.

    smtp_sink.py DIR PORT

Listens on 127.0.0.1:PORT and accepts every message.  Each one is written as
DIR/<n>.eml exactly as received (CRLF line ends, after dot-unstuffing, without
the terminating "."), and its envelope as DIR/<n>.env (JSON: peer, helo,
mail_from, mail_params, rcpt_to).  The .env file is written first and the
.eml last, each by rename, so a reader that sees <n>.eml sees whole files.

Commands: EHLO, HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT (and VRFY/HELP
politely refused).  EHLO advertises 8BITMIME and SMTPUTF8 so that the relaying
Postfix never converts a message on the way: what arrives here is what the
gateway produced.

Prints "smtp_sink: ready 127.0.0.1:PORT DIR" once listening; exits 0 on
SIGTERM or SIGINT.  Python 3 standard library only (asyncio).
"""

import asyncio
import json
import os
import re
import signal
import sys

MAX_LINE = 16 * 1024 * 1024
HOSTNAME = "sink.test"


class Sink:
    def __init__(self, directory):
        self.dir = directory
        self.counter = 0
        for name in os.listdir(directory):
            m = re.fullmatch(r"(\d+)\.(eml|env)", name)
            if m:
                self.counter = max(self.counter, int(m.group(1)))

    def store(self, data, envelope):
        self.counter += 1
        n = self.counter
        base = os.path.join(self.dir, str(n))
        with open(base + ".env.tmp", "w", encoding="utf-8") as f:
            json.dump(envelope, f, ensure_ascii=False, indent=1)
            f.write("\n")
        os.replace(base + ".env.tmp", base + ".env")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(data)
        os.replace(base + ".eml.tmp", base + ".eml")
        return n

    async def session(self, reader, writer):
        peer = writer.get_extra_info("peername")
        peer = "%s:%s" % (peer[0], peer[1]) if peer else "?"

        async def reply(text):
            writer.write(text.encode("utf-8") + b"\r\n")
            await writer.drain()

        helo = None
        mail_from = None
        mail_params = []
        rcpts = []
        try:
            await reply("220 %s ESMTP kyso e2e sink" % HOSTNAME)
            while True:
                line = await reader.readline()
                if not line:
                    return
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")
                verb = text.split(" ", 1)[0].upper()
                arg = text[len(verb):].strip()
                if verb == "EHLO":
                    helo = arg
                    mail_from, mail_params, rcpts = None, [], []
                    await reply("250-%s\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
                                "250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP" % HOSTNAME)
                elif verb == "HELO":
                    helo = arg
                    mail_from, mail_params, rcpts = None, [], []
                    await reply("250 %s" % HOSTNAME)
                elif verb == "MAIL":
                    m = re.match(r"(?i)FROM:\s*<([^>]*)>\s*(.*)$", arg)
                    if not m:
                        await reply("501 5.5.4 Syntax: MAIL FROM:<address>")
                    elif mail_from is not None:
                        await reply("503 5.5.1 Error: nested MAIL command")
                    else:
                        mail_from = m.group(1)
                        mail_params = m.group(2).split()
                        rcpts = []
                        await reply("250 2.1.0 Ok")
                elif verb == "RCPT":
                    m = re.match(r"(?i)TO:\s*<([^>]*)>", arg)
                    if mail_from is None:
                        await reply("503 5.5.1 Error: need MAIL command")
                    elif not m:
                        await reply("501 5.5.4 Syntax: RCPT TO:<address>")
                    else:
                        rcpts.append(m.group(1))
                        await reply("250 2.1.5 Ok")
                elif verb == "DATA":
                    if mail_from is None or not rcpts:
                        await reply("503 5.5.1 Error: need RCPT command")
                        continue
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    chunks = []
                    while True:
                        dline = await reader.readline()
                        if not dline:
                            return  # connection lost mid-DATA: nothing stored
                        if dline in (b".\r\n", b".\n"):
                            break
                        if dline.startswith(b"."):
                            dline = dline[1:]
                        chunks.append(dline)
                    n = self.store(b"".join(chunks), {
                        "peer": peer, "helo": helo, "mail_from": mail_from,
                        "mail_params": mail_params, "rcpt_to": rcpts})
                    mail_from, mail_params, rcpts = None, [], []
                    await reply("250 2.0.0 Ok: queued as %d" % n)
                elif verb == "RSET":
                    mail_from, mail_params, rcpts = None, [], []
                    await reply("250 2.0.0 Ok")
                elif verb == "NOOP":
                    await reply("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 Bye")
                    return
                elif verb in ("VRFY", "HELP"):
                    await reply("502 5.5.1 Not implemented")
                else:
                    await reply("500 5.5.2 Error: command not recognized")
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass


async def main(directory, port):
    sink = Sink(directory)
    server = await asyncio.start_server(sink.session, "127.0.0.1", port,
                                        limit=MAX_LINE, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("smtp_sink: ready 127.0.0.1:%d %s" % (port, directory), flush=True)
    await stop.wait()
    # Do not wait for open sessions (Postfix may cache its connection).
    server.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write("usage: smtp_sink.py DIR PORT\n")
        sys.exit(64)
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    try:
        asyncio.run(main(d, int(sys.argv[2])))
    except OSError as e:
        sys.stderr.write("smtp_sink: %s\n" % e)
        sys.exit(1)
    sys.exit(0)
