//! Group chat (XEP-0045) with tokio-xmpp: two Rust clients in a Kith room.
//!
//! xmpp-parsers (re-exported by tokio-xmpp 6) types the join (`muc::Muc`, with its
//! `<history/>`), the occupant presences (`muc::MucUser`: status codes and `<item/>`) and
//! the room's `<stanza-id/>`; it has no type for the owner and admin queries, so those two
//! payloads (the instant-room form of XEP-0045 §10.1.2 and a member-list change, §9.3) are
//! built as plain `minidom` elements inside a typed `<iq/>`.

use futures::StreamExt as _;
use kith_interop::{test_ca, Kith, DOMAIN, PASSWORD, STEP};
use tokio_xmpp::connect::{DnsConfig, StartTlsServerConnector};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::muc::user::{Affiliation, Role, Status};
use tokio_xmpp::parsers::muc::{Muc, MucUser};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_id::StanzaId;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_DATA: &str = "jabber:x:data";

fn jid(s: &str) -> Jid {
    Jid::new(s).expect("valid jid")
}

async fn online(kith: &Kith, who: &str) -> (Client, Jid) {
    test_ca(); // exports SSL_CERT_FILE before tokio-xmpp loads the trust store
    let mut client = Client::new_with_connector(
        jid(&format!("{who}@{DOMAIN}/tokio")),
        PASSWORD,
        StartTlsServerConnector::from(DnsConfig::addr(&kith.c2s.to_string())),
        Timeouts::default(),
    );
    let bound = tokio::time::timeout(STEP, async {
        loop {
            match client.next().await {
                Some(Event::Online { bound_jid, .. }) => return bound_jid,
                Some(Event::Disconnected(e)) => panic!("{who} could not log in: {e}"),
                Some(_) => {}
                None => panic!("{who}'s client stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{who} not online within {STEP:?}:\n{}", kith.log_tail()));
    client
        .send_stanza(Presence::available().into())
        .await
        .expect("send presence");
    (client, bound)
}

/// The next stanza `pick` accepts (others are skipped), within STEP.
async fn next<T>(
    client: &mut Client,
    kith: &Kith,
    what: &str,
    mut pick: impl FnMut(Stanza) -> Option<T>,
) -> T {
    tokio::time::timeout(STEP, async {
        loop {
            match client.next().await {
                Some(Event::Stanza(s)) => {
                    if let Some(t) = pick(s) {
                        return t;
                    }
                }
                Some(Event::Disconnected(e)) => panic!("disconnected waiting for {what}: {e}"),
                Some(_) => {}
                None => panic!("client stopped waiting for {what}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {STEP:?}:\n{}", kith.log_tail()))
}

/// The `<x xmlns='…muc#user'/>` of a presence, typed.
fn muc_user(p: &Presence) -> Option<MucUser> {
    p.payloads
        .iter()
        .find(|e| e.is("x", "http://jabber.org/protocol/muc#user"))
        .and_then(|e| MucUser::try_from(e.clone()).ok())
}

/// Join `room` as `nick` and return the room's self-presence (status 110).
async fn join(client: &mut Client, kith: &Kith, room: &BareJid, nick: &str) -> MucUser {
    let occupant = room.with_resource_str(nick).expect("occupant jid");
    let join = Presence::available()
        .with_to(occupant.clone())
        .with_payload(Muc::new().with_history(History::new().with_maxstanzas(0)));
    client.send_stanza(join.into()).await.expect("send join");
    let what = format!("self-presence from {occupant}");
    next(client, kith, &what, |s| match s {
        Stanza::Presence(p) if p.from.as_ref() == Some(&Jid::from(occupant.clone())) => {
            assert_ne!(p.type_, PresenceType::Error, "join refused: {p:?}");
            muc_user(&p).filter(|x| x.status.contains(&Status::SelfPresence))
        }
        _ => None,
    })
    .await
}

/// Send an IQ set with a hand-built payload to the room; panic unless it is a result.
async fn iq_set(client: &mut Client, kith: &Kith, room: &BareJid, id: &str, payload: Element) {
    let iq = Iq::Set {
        from: None,
        to: Some(room.clone().into()),
        id: id.to_owned(),
        payload,
    };
    client.send_stanza(iq.into()).await.expect("send iq");
    next(client, kith, &format!("answer to iq {id}"), |s| match s {
        Stanza::Iq(Iq::Result { id: got, .. }) if got == id => Some(()),
        Stanza::Iq(iq @ Iq::Error { .. }) => panic!("iq {id} refused: {iq:?}"),
        _ => None,
    })
    .await
}

/// A payload the parsers have no type for, from its XML.
fn xml(s: &str) -> Element {
    s.parse().expect("well-formed payload")
}

fn groupchat(room: &BareJid, body: &str) -> Stanza {
    let mut m = Message::new(Some(room.clone().into())).with_body(Lang::default(), body.into());
    m.type_ = MessageType::Groupchat;
    m.into()
}

/// The live groupchat message `body` from `room/nick`, with the room's stanza id.
async fn heard(client: &mut Client, kith: &Kith, room: &BareJid, nick: &str, body: &str) -> String {
    let from: Jid = room.with_resource_str(nick).expect("occupant").into();
    let what = format!("groupchat {body:?} from {from}");
    let m = next(client, kith, &what, |s| match s {
        Stanza::Message(m)
            if m.type_ == MessageType::Groupchat
                && m.from.as_ref() == Some(&from)
                && m.bodies.values().any(|b| b == body) =>
        {
            Some(m)
        }
        _ => None,
    })
    .await;
    let ids: Vec<StanzaId> = m
        .payloads
        .iter()
        .filter_map(|e| StanzaId::try_from(e.clone()).ok())
        .filter(|s| s.by == *room)
        .collect();
    assert_eq!(ids.len(), 1, "one <stanza-id by='{room}'/>: {m:?}");
    ids[0].id.clone()
}

#[tokio::test]
async fn two_tokio_xmpp_clients_talk_in_a_kith_room() {
    let kith = Kith::start(&["alice", "bob"]).expect("start kith");
    let (mut alice, _) = online(&kith, "alice").await;
    let (mut bob, bob_jid) = online(&kith, "bob").await;
    let room = BareJid::new(&format!("rusty@groups.{DOMAIN}")).expect("room jid");

    // Alice creates the room (201) and accepts the defaults: an instant room.
    let me = join(&mut alice, &kith, &room, "alice").await;
    assert!(me.status.contains(&Status::RoomHasBeenCreated), "{me:?}");
    assert_eq!(me.items[0].affiliation, Affiliation::Owner);
    assert_eq!(me.items[0].role, Role::Moderator);
    let instant = xml(&format!(
        "<query xmlns='{NS_MUC_OWNER}'><x xmlns='{NS_DATA}' type='submit'/></query>"
    ));
    iq_set(&mut alice, &kith, &room, "instant", instant).await;

    // Household rooms are members-only: alice makes bob a member, then he joins.
    let grant = xml(&format!(
        "<query xmlns='{NS_MUC_ADMIN}'><item affiliation='member' jid='bob@{DOMAIN}'/></query>"
    ));
    iq_set(&mut alice, &kith, &room, "member", grant).await;
    let me = join(&mut bob, &kith, &room, "bob").await;
    assert_eq!(me.items[0].affiliation, Affiliation::Member);
    assert_eq!(me.items[0].role, Role::Participant);
    assert!(
        me.status.contains(&Status::NonAnonymousRoom),
        "a non-anonymous room says so (100): {me:?}"
    );
    // Alice sees bob arrive, with his real JID (non-anonymous room).
    let bob_occupant: Jid = room.with_resource_str("bob").expect("occupant").into();
    let seen = next(&mut alice, &kith, "bob's presence", |s| match s {
        Stanza::Presence(p) if p.from.as_ref() == Some(&bob_occupant) => muc_user(&p),
        _ => None,
    })
    .await;
    assert_eq!(
        seen.items[0].jid.clone().map(Jid::from),
        Some(bob_jid.clone())
    );

    // A line each way; the sender gets the room's reflection with the same stanza id.
    bob.send_stanza(groupchat(&room, "hello from tokio-xmpp bob"))
        .await
        .expect("send");
    let at_alice = heard(&mut alice, &kith, &room, "bob", "hello from tokio-xmpp bob").await;
    let at_bob = heard(&mut bob, &kith, &room, "bob", "hello from tokio-xmpp bob").await;
    assert_eq!(at_alice, at_bob);
    alice
        .send_stanza(groupchat(&room, "hi bob, alice here"))
        .await
        .expect("send");
    heard(&mut bob, &kith, &room, "alice", "hi bob, alice here").await;
    heard(&mut alice, &kith, &room, "alice", "hi bob, alice here").await;

    // Bob leaves; alice sees him go.
    bob.send_stanza(
        Presence::new(PresenceType::Unavailable)
            .with_to(room.with_resource_str("bob").expect("occupant"))
            .into(),
    )
    .await
    .expect("send");
    next(&mut alice, &kith, "bob's exit", |s| match s {
        Stanza::Presence(p)
            if p.from.as_ref() == Some(&bob_occupant) && p.type_ == PresenceType::Unavailable =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    alice.send_end().await.expect("close alice");
    bob.send_end().await.expect("close bob");
}
