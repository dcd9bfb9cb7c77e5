//! SASL2 (XEP-0388), Bind2 (XEP-0386) and FAST (XEP-0484) with RFC 9266 tls-exporter
//! channel binding, spoken by hand over a real rustls connection to the real `kith`:
//! SCRAM-SHA-256-PLUS from the `sasl` crate, then a token login with HT-SHA-256-EXPR.
//!
//! No Rust or Python client implements SASL2 yet (tokio-xmpp 6 and slixmpp 1.17 do not);
//! Python cannot export TLS keying material, so the channel-bound FAST mechanism is
//! exercised here, and the rest of SASL2/FAST in tests/e2e/test_sasl2.py and test_fast.py.

use base64::Engine;
use kith_interop::{starttls, test_ca, tls_exporter, Kith, RawConn, PASSWORD};
use ring::hmac;
use sasl::client::mechanisms::Scram;
use sasl::client::Mechanism;
use sasl::common::scram::Sha256;
use sasl::common::{ChannelBinding, Credentials};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const AGENT: &str = "<user-agent id='4d0c7a4e-0c0f-4c43-9d0e-6a8e9b1f2a3c'>\
                     <software>kith-interop</software><device>test rig</device></user-agent>";

/// The text between `<name…>` and `</name>` in `xml`, if present.
fn inner<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}"))?;
    let open_end = start + xml[start..].find('>')?;
    let close = open_end + xml[open_end..].find(&format!("</{name}>"))?;
    Some(xml[open_end + 1..close].trim())
}

/// The value of `attr='…'` inside the first `<name …>` tag of `xml`.
fn attr<'a>(xml: &'a str, name: &str, attr: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name} "))?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let at = tag.find(&format!("{attr}='"))? + attr.len() + 2;
    Some(&tag[at..at + tag[at..].find('\'')?])
}

/// Read up to the end of the expected `<success>` or `<failure>` (`name`); the
/// other one shows in the timeout error, which carries what was received.
async fn outcome(conn: &mut RawConn<TlsStream<TcpStream>>, name: &str) -> String {
    conn.read_until(&format!("</{name}>")).await.expect(name)
}

fn ht(token: &str, label: &[u8], cb: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let mut msg = label.to_vec();
    msg.extend_from_slice(cb);
    hmac::sign(&key, &msg).as_ref().to_vec()
}

#[tokio::test]
async fn scram_plus_over_sasl2_then_a_channel_bound_token_login() {
    let kith = Kith::start(&["alice"]).expect("start kith");
    let config = test_ca().client_config(false, None);

    // 1. SCRAM-SHA-256-PLUS (tls-exporter) through SASL2, binding a resource and asking
    //    for a token bound to HT-SHA-256-EXPR.
    let (mut conn, features) = starttls(kith.c2s, config.clone()).await.expect("starttls");
    assert!(
        features.contains("urn:xmpp:sasl:2") && features.contains("HT-SHA-256-EXPR"),
        "SASL2 with FAST HT-SHA-256-EXPR not offered: {features}"
    );
    let ekm = tls_exporter(&conn).expect("tls-exporter");
    let creds = Credentials::default()
        .with_username("alice")
        .with_password(PASSWORD)
        .with_channel_binding(ChannelBinding::TlsExporter(ekm));
    let mut scram = Scram::<Sha256>::from_credentials(creds).expect("scram");
    let (name, first) = (scram.name().to_string(), B64.encode(scram.initial()));
    conn.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{}'>\
         <initial-response>{}</initial-response>{AGENT}\
         <bind xmlns='urn:xmpp:bind:0'><tag>Interop</tag></bind>\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-EXPR'/></authenticate>",
        name, first
    ))
    .await
    .expect("send");
    let challenge = conn.read_until("</challenge>").await.expect("challenge");
    let data = B64
        .decode(inner(&challenge, "challenge").expect("challenge text"))
        .expect("base64");
    let reply = scram.response(&data).expect("client-final");
    conn.send(&format!(
        "<response xmlns='urn:xmpp:sasl:2'>{}</response>",
        B64.encode(reply)
    ))
    .await
    .expect("send");
    let success = conn.read_until("</success>").await.expect("success");
    let server_final = B64
        .decode(inner(&success, "additional-data").expect("additional-data"))
        .expect("base64");
    scram
        .success(&server_final)
        .expect("server signature verifies");
    let jid = inner(&success, "authorization-identifier")
        .expect("authzid")
        .to_string();
    assert!(jid.starts_with("alice@localhost/Interop."), "{jid}");
    let token = attr(&success, "token", "token").expect("token").to_string();
    drop(conn);

    // 2. A new connection logs in with the token alone, bound to *its* TLS channel.
    let (mut conn, _) = starttls(kith.c2s, config.clone()).await.expect("starttls");
    let cb = tls_exporter(&conn).expect("tls-exporter");
    let mut initial = b"alice\0".to_vec();
    initial.extend(ht(&token, b"Initiator", &cb));
    conn.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-EXPR'>\
         <initial-response>{}</initial-response>{AGENT}\
         <bind xmlns='urn:xmpp:bind:0'><tag>Interop</tag></bind>\
         <fast xmlns='urn:xmpp:fast:0' count='1'/></authenticate>",
        B64.encode(&initial)
    ))
    .await
    .expect("send");
    let answer = outcome(&mut conn, "success").await;
    let proof = B64
        .decode(inner(&answer, "additional-data").expect("additional-data"))
        .expect("base64");
    assert_eq!(proof, ht(&token, b"Responder", &cb), "server proof");
    assert_eq!(
        inner(&answer, "authorization-identifier"),
        Some(&jid[..]),
        "same device, same resource"
    );
    drop(conn);

    // 3. The same proof relayed onto another TLS connection (a man in the middle) fails.
    let (mut conn, _) = starttls(kith.c2s, config).await.expect("starttls");
    conn.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-EXPR'>\
         <initial-response>{}</initial-response>{AGENT}\
         <fast xmlns='urn:xmpp:fast:0' count='2'/></authenticate>",
        B64.encode(&initial)
    ))
    .await
    .expect("send");
    let answer = outcome(&mut conn, "failure").await;
    assert!(
        answer.contains("not-authorized"),
        "a relayed channel-bound token login was accepted: {answer}"
    );
}
