"""Avatars: a picture set on one device shows on every contact's device, whichever way the
client sets it — User Avatar in PEP (XEP-0084) or the vCard photo (XEP-0054/XEP-0153) —
because Kith keeps the two in step (XEP-0398) and stamps the photo hash into presence."""

import asyncio
import hashlib

from conftest import (DOMAIN, STEP, announce_caps, befriend, online, run)

ALICE = f"alice@{DOMAIN}"
NS_META = "urn:xmpp:avatar:metadata"
# A tiny PNG (1x1, transparent) and a second picture.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e5273b2e0000000049454e44ae426082")
PNG2 = PNG + b"\x00second"


def metadata_queue(client) -> asyncio.Queue:
    q: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("avatar_metadata_publish", q.put_nowait)
    return q


def info_of(msg):
    meta = msg["pubsub_event"]["items"]["item"]["payload"]
    info = meta.find(f"{{{NS_META}}}info")
    return info.attrib if info is not None else None


def test_a_pep_avatar_reaches_contacts_vcard_and_presence(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob:
            await announce_caps(alice, "xep_0084")
            await announce_caps(bob, "xep_0084")
            await befriend(alice, bob)
            meta = metadata_queue(bob)
            sha = hashlib.sha1(PNG).hexdigest()

            avatar = alice.plugin["xep_0084"]
            await avatar.publish_avatar(PNG, timeout=STEP)
            await avatar.publish_avatar_metadata(
                {"id": sha, "type": "image/png", "bytes": len(PNG)}, timeout=STEP)
            msg = await asyncio.wait_for(meta.get(), STEP)
            assert info_of(msg)["id"] == sha
            data = await bob.plugin["xep_0084"].retrieve_avatar(ALICE, sha, timeout=STEP)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == PNG

            # XEP-0398: the vCard shows the same picture, for clients that only read vCards.
            vcard = await bob.plugin["xep_0054"].get_vcard(ALICE, cached=False, timeout=STEP)
            assert vcard["vcard_temp"]["PHOTO"]["BINVAL"] == PNG
            assert vcard["vcard_temp"]["PHOTO"]["TYPE"] == "image/png"

            # XEP-0153: bob's devices are told at once, by alice's presence carrying the hash
            # (sent again by the server: alice's app did nothing)...
            def photo(p):
                x = p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
                return x.text if x is not None else None
            p = await bob.next_presence(lambda p: p["from"].bare == ALICE and photo(p) == sha)
            # ... and alice's next presence carries it too.
            alice.send_presence(pstatus="new look")
            p = await bob.next_presence(lambda p: p["status"] == "new look")
            assert photo(p) == sha
    run(scenario())


def test_a_vcard_photo_becomes_a_pep_avatar(kith):
    async def scenario():
        async with online(kith, "alice", "laptop", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob:
            await announce_caps(alice)
            await announce_caps(bob, "xep_0084")
            await befriend(alice, bob)
            meta = metadata_queue(bob)
            sha = hashlib.sha1(PNG2).hexdigest()

            # An old client sets its avatar through the vCard (XEP-0153).
            alice.register_plugin("xep_0153")
            await alice.plugin["xep_0153"].set_avatar(avatar=PNG2, mtype="image/png",
                                                      timeout=STEP)
            msg = await asyncio.wait_for(meta.get(), STEP)
            assert info_of(msg)["id"] == sha and info_of(msg)["type"] == "image/png"
            assert int(info_of(msg)["bytes"]) == len(PNG2)
            data = await bob.plugin["xep_0084"].retrieve_avatar(ALICE, sha, timeout=STEP)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == PNG2
    run(scenario())


def test_account_disco_advertises_vcard_conversion(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice:
            info = await alice.plugin["xep_0030"].get_info(jid=ALICE, timeout=STEP)
            assert "urn:xmpp:pep-vcard-conversion:0" in info["disco_info"]["features"]
    run(scenario())
