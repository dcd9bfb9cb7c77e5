"""Server pings (XEP-0199, server to client and to components): a phone that lost
signal without closing its connection leaves a half-open socket; the server asks idle
peers "are you there?" and closes the ones that never answer. Peers that answer stay."""

import asyncio

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import (DOMAIN, STEP, AppServer, RawXmpp, online, plain_context_unverified,
                      run, stream_error_condition)

APP = "push.localhost"
SECRET = "app-server-secret"
FAST = {"ping": {"idle_secs": 1, "timeout_secs": 2}}


def test_a_client_that_answers_pings_stays_connected(kith_extra):
    kith = kith_extra(sections=FAST)

    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob") as bob:
            pings = []
            alice.register_handler(Callback("count pings",
                                            MatchXPath("{jabber:client}iq/{urn:xmpp:ping}ping"),
                                            pings.append))
            # Several ping intervals go by with alice silent but answering.
            while len(pings) < 3:  # bounded by run()'s timeout
                await asyncio.sleep(0.5)
            assert all(p["from"].full == DOMAIN for p in pings)
            assert not alice.gone.done(), "a client that answers pings was disconnected"
            bob.send_message(mto=f"alice@{DOMAIN}", mbody="still here?", mtype="chat")
            assert (await alice.next_message())["body"] == "still here?"
    run(scenario(), timeout=STEP * 3)


def test_a_client_that_never_answers_is_disconnected(kith_extra):
    kith = kith_extra(sections=FAST)
    raw = RawXmpp(kith.c2s_port)
    try:
        raw.login(plain_context_unverified(), "carol", "half-open")
        # Carol's connection is "half-open": it reads but never writes again.
        raw.read_until_closed(timeout=STEP)
        assert b"urn:xmpp:ping" in raw.raw, "the server never pinged"
        assert stream_error_condition(raw.raw) == "connection-timeout", raw.raw[-300:]
    finally:
        raw.close()


def test_a_connected_component_is_pinged_and_stays(kith_extra):
    kith = kith_extra(component=True, sections={"components": {APP: SECRET}, **FAST})

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            while app.pings < 2:
                await asyncio.sleep(0.5)
            assert not app.gone.done()
            async with online(kith, "alice") as alice:
                alice.send_message(mto=APP, mbody="ping survived", mtype="chat")
                assert (await asyncio.wait_for(app.messages.get(), STEP))["body"] == \
                    "ping survived"
        finally:
            await app.close()
    run(scenario(), timeout=STEP * 3)
