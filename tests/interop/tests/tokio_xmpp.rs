//! A second, independent client: tokio-xmpp (xmpp-rs) logs in to the real `kith` and chats.
//!
//! On TLS 1.3 tokio-xmpp authenticates with SCRAM-SHA-256-PLUS and tls-exporter channel
//! binding whenever the server offers it, so these logins exercise -PLUS too.

use std::time::Duration;

use futures::StreamExt as _;
use kith_interop::{test_ca, Kith, DOMAIN, PASSWORD, STEP};
use tokio_xmpp::connect::{DirectTlsServerConnector, DnsConfig, StartTlsServerConnector};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

fn jid(s: &str) -> Jid {
    Jid::new(s).expect("valid jid")
}

async fn online(kith: &Kith, who: &str, direct: bool) -> (Client, Jid) {
    test_ca(); // exports SSL_CERT_FILE before tokio-xmpp loads the trust store
    let j = jid(&format!("{who}@{DOMAIN}/tokio"));
    let mut client = if direct {
        Client::new_with_connector(
            j,
            PASSWORD,
            DirectTlsServerConnector::from(DnsConfig::addr(&kith.c2s_tls.to_string())),
            Timeouts::default(),
        )
    } else {
        Client::new_with_connector(
            j,
            PASSWORD,
            StartTlsServerConnector::from(DnsConfig::addr(&kith.c2s.to_string())),
            Timeouts::default(),
        )
    };
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

async fn next_chat(client: &mut Client, kith: &Kith) -> Message {
    tokio::time::timeout(STEP, async {
        loop {
            match client.next().await {
                Some(Event::Stanza(Stanza::Message(m))) if !m.bodies.is_empty() => return m,
                Some(Event::Disconnected(e)) => panic!("disconnected: {e}"),
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no message within {STEP:?}:\n{}", kith.log_tail()))
}

fn chat(to: &Jid, body: &str) -> Stanza {
    let mut m = Message::new(Some(to.clone())).with_body(Lang::default(), body.to_owned());
    m.type_ = MessageType::Chat;
    m.into()
}

async fn chat_both_ways(direct: bool) {
    let kith = Kith::start(&["alice", "bob"]).expect("start kith");
    let (mut alice, alice_jid) = online(&kith, "alice", direct).await;
    let (mut bob, bob_jid) = online(&kith, "bob", false).await;
    assert_eq!(
        alice_jid.to_bare(),
        BareJid::new(&format!("alice@{DOMAIN}")).expect("bare")
    );
    // Let both presences settle before writing to bare JIDs.
    tokio::time::sleep(Duration::from_millis(200)).await;

    alice
        .send_stanza(chat(
            &jid(&format!("bob@{DOMAIN}")),
            "hi bob, from tokio-xmpp",
        ))
        .await
        .expect("send");
    let got = next_chat(&mut bob, &kith).await;
    assert_eq!(
        got.bodies.values().next().map(String::as_str),
        Some("hi bob, from tokio-xmpp")
    );
    assert_eq!(
        got.from.as_ref(),
        Some(&alice_jid),
        "from is alice's full JID"
    );

    bob.send_stanza(chat(&alice_jid, "hi alice"))
        .await
        .expect("send");
    let got = next_chat(&mut alice, &kith).await;
    assert_eq!(
        got.bodies.values().next().map(String::as_str),
        Some("hi alice")
    );
    assert_eq!(got.from.as_ref(), Some(&bob_jid));

    alice.send_end().await.expect("close alice");
    bob.send_end().await.expect("close bob");
    // tokio-xmpp (rustls, TLS 1.3) binds its login to the TLS channel
    // (tls-exporter): both users authenticated with SCRAM-SHA-256-PLUS.
    let log = without_colours(&kith.log_text());
    for user in ["alice", "bob"] {
        assert!(
            log.lines().any(|l| l.contains("authenticated")
                && l.contains(&format!("user={user}"))
                && l.contains("mechanism=\"SCRAM-SHA-256-PLUS\"")),
            "{user} did not authenticate with SCRAM-SHA-256-PLUS:\n{}",
            log.lines()
                .filter(|l| l.contains("authenticated"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// `text` without ANSI colour sequences (the log may colour field names).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&d| d == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn alice_and_bob_chat_over_starttls() {
    chat_both_ways(false).await;
}

#[tokio::test]
async fn alice_on_direct_tls_without_alpn_chats_with_bob() {
    // tokio-xmpp offers no ALPN on Direct TLS; XEP-0368 servers must still serve it.
    chat_both_ways(true).await;
}

#[tokio::test]
async fn wrong_password_does_not_get_online() {
    let kith = Kith::start(&["alice"]).expect("start kith");
    test_ca();
    let mut client = Client::new_with_connector(
        jid(&format!("alice@{DOMAIN}/tokio")),
        "not the password",
        StartTlsServerConnector::from(DnsConfig::addr(&kith.c2s.to_string())),
        Timeouts::default(),
    );
    // tokio-xmpp retries on its own; what matters is that it never gets online.
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.next().await {
                Some(Event::Online { .. }) => return Err("online with a wrong password"),
                Some(Event::Disconnected(e)) => return Ok(e.to_string()),
                Some(_) => {}
                None => return Ok("stopped".to_owned()),
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(_)) | Err(_) => {} // refused (or kept retrying without getting in)
        Ok(Err(e)) => panic!("{e}"),
    }
}
