"""Client State Indication (XEP-0352): bob's phone in his pocket is not woken for
presence changes and typing notifications, but gets them — in order — with the next
real message or when he looks at the phone again."""

import asyncio

from conftest import DOMAIN, STEP, online, run

BOB_PHONE = f"bob@{DOMAIN}/phone"


def arrivals(client):
    """A list that receives every message and presence for `client`, in arrival order."""
    seen = []
    client.add_event_handler("message", lambda m: seen.append(("message", m)))
    # slixmpp reports a message carrying only a chat state as a chatstate event.
    client.add_event_handler("chatstate",
                             lambda m: None if m["body"] else seen.append(("message", m)))
    client.add_event_handler("presence", lambda p: seen.append(("presence", p)))
    return seen


async def collect(seen, seconds):
    """Wait `seconds`, then take what arrived meanwhile."""
    await asyncio.sleep(seconds)
    got = list(seen)
    seen.clear()
    return got


def test_an_inactive_phone_gets_only_what_matters_until_it_wakes_up(kith):
    async def scenario():
        async with online(kith, "alice", "laptop") as alice, \
                online(kith, "bob", "phone") as bob:
            assert bob.plugin["xep_0352"].enabled, "the server offers CSI after login"
            bob.register_plugin("xep_0085")
            seen = arrivals(bob)
            bob.plugin["xep_0352"].send_inactive()
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)  # inactive is processed
            await collect(seen, 0.3)  # drain anything from logging in

            # alice's presence changes and typing notification wait …
            alice.register_plugin("xep_0085")
            alice.send_presence(pto=BOB_PHONE, pshow="away", pstatus="lunch")
            msg = alice.make_message(mto=BOB_PHONE, mtype="chat")
            msg["chat_state"] = "composing"
            msg.send()
            held = await collect(seen, 1.5)
            assert held == [], f"an inactive phone was woken for {held}"

            # … until a real message arrives: then all of it, in order.
            alice.send_message(mto=BOB_PHONE, mbody="are you coming?", mtype="chat")
            got = await collect(seen, 1.5)
            kinds = [(k, (s["show"] if k == "presence" else s["body"] or s["chat_state"]))
                     for k, s in got]
            assert kinds == [("presence", "away"), ("message", "composing"),
                             ("message", "are you coming?")], kinds

            # Held again, then released by <active/>.
            alice.send_presence(pto=BOB_PHONE, pshow="chat", pstatus="back")
            assert await collect(seen, 1.0) == []
            bob.plugin["xep_0352"].send_active()
            got = await collect(seen, 1.5)
            assert [(k, s["show"]) for k, s in got] == [("presence", "chat")], got
    run(scenario())


def test_a_subscription_request_is_never_held(kith):
    """A person answers subscription requests: they are not presence updates."""
    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob", "phone") as bob:
            bob.plugin["xep_0352"].send_inactive()
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            alice.send_presence_subscription(pto=f"bob@{DOMAIN}", ptype="subscribe")
            req = await bob.next_presence(lambda p: p["type"] == "subscribe", timeout=STEP)
            assert req["from"].bare == f"alice@{DOMAIN}"
    run(scenario())
