"""OMEMO end to end with a real OMEMO implementation: two slixmpp clients running the
`slixmpp-omemo` plugin (OMEMO 0.3 and OMEMO 2, via python-omemo) publish their device lists
and bundles through Kith's PEP, fetch each other's, and exchange an encrypted message that
only the recipient can read."""

import asyncio

from omemo.storage import Just, Maybe, Nothing, Storage
from slixmpp import JID
from slixmpp.plugins import register_plugin
from slixmpp_omemo import TrustLevel, XEP_0384

from conftest import DOMAIN, STEP, announce_caps, befriend, online, run

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


class MemoryStorage(Storage):
    """python-omemo's key store, kept in memory for the test."""

    def __init__(self):
        super().__init__()
        self.data: dict = {}

    async def _load(self, key: str) -> Maybe:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class Omemo(XEP_0384):
    """slixmpp-omemo with blind trust before verification (BTBV), as the apps do by default."""

    default_config = {"fallback_message": "This message is OMEMO encrypted."}

    def plugin_init(self) -> None:
        self._store = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._store

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(self, blindly_trusted, identifier):
        pass

    async def _prompt_manual_trust(self, manually_trusted, identifier):
        session_manager = await self.get_session_manager()
        for device in manually_trusted:
            await session_manager.set_trust(device.bare_jid, device.identity_key,
                                            TrustLevel.BLINDLY_TRUSTED.value)


register_plugin(Omemo)


async def omemo_ready(client):
    ready = asyncio.get_running_loop().create_future()
    client.add_event_handler("omemo_initialized",
                             lambda *_: ready.done() or ready.set_result(True))
    client.register_plugin("xep_0384")
    await asyncio.wait_for(ready, STEP * 3)
    return client.plugin["xep_0384"]


def test_two_omemo_clients_exchange_an_encrypted_message(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob:
            await announce_caps(alice)
            await announce_caps(bob)
            await befriend(alice, bob)
            a_omemo = await omemo_ready(alice)
            b_omemo = await omemo_ready(bob)
            await announce_caps(alice)  # now with the device lists' +notify
            await announce_caps(bob)

            # Both device lists and bundles are on the server, readable by the other.
            for owner in (ALICE, BOB):
                for node in ("eu.siacs.conversations.axolotl.devicelist",
                             "urn:xmpp:omemo:2:devices"):
                    r = await bob.plugin["xep_0060"].get_items(owner, node, timeout=STEP)
                    assert len(r["pubsub"]["items"]) == 1, (owner, node)

            msg = alice.make_message(mto=JID(BOB), mtype="chat")
            msg["body"] = "the spare key is under the blue pot"
            encrypted, errors = await a_omemo.encrypt_message(msg, JID(BOB))
            assert not errors, errors
            assert encrypted is not None
            encrypted.send()

            got = await bob.next_message()
            assert "the spare key" not in str(got), "the server saw only ciphertext"
            assert b_omemo.is_encrypted(got)
            plain, device = await b_omemo.decrypt_message(got)
            assert plain["body"] == "the spare key is under the blue pot"
            assert device.bare_jid == ALICE
    run(scenario(), timeout=120)
