//! SCRAM-*-PLUS with RFC 9266 tls-exporter channel binding, spoken by hand over a real
//! rustls connection to the real `kith`, with the `sasl` crate's client SCRAM.
//!
//! Python's ssl module cannot export keying material, so slixmpp never does -PLUS on
//! TLS 1.3; these tests are where Kith's channel binding meets an independent client.

use kith_interop::{
    direct_tls, starttls, test_ca, tls_exporter, Kith, SaslOutcome, DOMAIN, PASSWORD,
};
use sasl::client::mechanisms::Scram;
use sasl::client::Mechanism;
use sasl::common::scram::{Sha1, Sha256};
use sasl::common::{ChannelBinding, Credentials};

fn creds(binding: ChannelBinding) -> Credentials {
    Credentials::default()
        .with_username("alice")
        .with_password(PASSWORD)
        .with_channel_binding(binding)
}

fn scram(hash: &str, binding: ChannelBinding) -> Box<dyn Mechanism + Send> {
    match hash {
        "SHA-256" => Box::new(Scram::<Sha256>::from_credentials(creds(binding)).expect("scram")),
        "SHA-1" => Box::new(Scram::<Sha1>::from_credentials(creds(binding)).expect("scram")),
        other => panic!("no such hash {other}"),
    }
}

async fn plus_over_starttls(hash: &str) {
    let kith = Kith::start(&["alice"]).expect("start kith");
    let (mut conn, features) = starttls(kith.c2s, test_ca().client_config(false, None))
        .await
        .expect("starttls");
    let name = format!("SCRAM-{hash}-PLUS");
    assert!(
        features.contains(&format!(">{name}<")),
        "{name} not offered: {features}"
    );
    assert!(
        features.contains("urn:xmpp:sasl-cb:0") && features.contains("tls-exporter"),
        "XEP-0440 tls-exporter not advertised: {features}"
    );
    let ekm = tls_exporter(&conn).expect("tls-exporter");
    let mut mech = scram(hash, ChannelBinding::TlsExporter(ekm));
    assert_eq!(mech.name(), name);
    let outcome = conn.sasl(mech.as_mut()).await.expect("sasl");
    assert!(
        matches!(outcome, SaslOutcome::Success(_)),
        "{name} with the right tls-exporter data failed: {outcome:?}"
    );
    let jid = conn.bind("plus").await.expect("bind");
    assert_eq!(jid, format!("alice@{DOMAIN}/plus"));
}

#[tokio::test]
async fn scram_sha_256_plus_with_tls_exporter_over_starttls() {
    plus_over_starttls("SHA-256").await;
}

#[tokio::test]
async fn scram_sha_1_plus_with_tls_exporter_over_starttls() {
    plus_over_starttls("SHA-1").await;
}

async fn wrong_binding_fails(hash: &str) {
    let kith = Kith::start(&["alice"]).expect("start kith");
    let config = test_ca().client_config(false, None);
    // The binding of *another* TLS connection: what a man in the middle would relay.
    let (other, _) = starttls(kith.c2s, config.clone()).await.expect("starttls");
    let foreign = tls_exporter(&other).expect("tls-exporter");
    let (mut conn, _) = starttls(kith.c2s, config).await.expect("starttls");
    assert_ne!(foreign, tls_exporter(&conn).expect("tls-exporter"));
    let mut mech = scram(hash, ChannelBinding::TlsExporter(foreign));
    let outcome = conn.sasl(mech.as_mut()).await.expect("sasl");
    match outcome {
        SaslOutcome::Failure(el) => assert!(
            el.contains("not-authorized") || el.contains("malformed-request"),
            "unexpected failure condition: {el}"
        ),
        SaslOutcome::Success(_) => panic!("SCRAM-{hash}-PLUS accepted a foreign channel binding"),
    }
}

#[tokio::test]
async fn scram_sha_256_plus_with_foreign_binding_data_fails() {
    wrong_binding_fails("SHA-256").await;
}

#[tokio::test]
async fn scram_sha_1_plus_with_foreign_binding_data_fails() {
    wrong_binding_fails("SHA-1").await;
}

#[tokio::test]
async fn scram_plus_with_garbage_binding_data_fails() {
    let kith = Kith::start(&["alice"]).expect("start kith");
    let (mut conn, _) = starttls(kith.c2s, test_ca().client_config(false, None))
        .await
        .expect("starttls");
    let mut mech = scram("SHA-256", ChannelBinding::TlsExporter(vec![0x42; 32]));
    let outcome = conn.sasl(mech.as_mut()).await.expect("sasl");
    assert!(
        matches!(outcome, SaslOutcome::Failure(_)),
        "accepted garbage binding data: {outcome:?}"
    );
}

#[tokio::test]
async fn scram_plus_over_direct_tls_with_alpn() {
    let kith = Kith::start(&["alice"]).expect("start kith");
    let (mut conn, features) = direct_tls(
        kith.c2s_tls,
        test_ca().client_config(false, Some(b"xmpp-client")),
    )
    .await
    .expect("direct tls");
    assert_eq!(
        conn.get_ref().get_ref().1.alpn_protocol(),
        Some(&b"xmpp-client"[..]),
        "the server must select ALPN xmpp-client"
    );
    assert!(
        !features.contains("xmpp-tls"),
        "STARTTLS offered inside TLS"
    );
    let ekm = tls_exporter(&conn).expect("tls-exporter");
    let mut mech = scram("SHA-256", ChannelBinding::TlsExporter(ekm));
    let outcome = conn.sasl(mech.as_mut()).await.expect("sasl");
    assert!(matches!(outcome, SaslOutcome::Success(_)), "{outcome:?}");
}

#[tokio::test]
async fn scram_plus_with_tls_exporter_on_tls_1_2() {
    // RFC 9266 allows tls-exporter on TLS 1.2 with extended master secret, which rustls
    // always negotiates.
    let kith = Kith::start(&["alice"]).expect("start kith");
    let (mut conn, _) = starttls(kith.c2s, test_ca().client_config(true, None))
        .await
        .expect("starttls");
    assert_eq!(
        conn.get_ref().get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let ekm = tls_exporter(&conn).expect("tls-exporter");
    let mut mech = scram("SHA-256", ChannelBinding::TlsExporter(ekm));
    let outcome = conn.sasl(mech.as_mut()).await.expect("sasl");
    assert!(matches!(outcome, SaslOutcome::Success(_)), "{outcome:?}");
}

#[tokio::test]
async fn client_claiming_no_server_binding_support_is_refused() {
    // gs2 flag 'y' = "I could bind but think you can't": the server offers -PLUS, so this
    // is a downgrade (RFC 5802 §6) and must fail.
    let kith = Kith::start(&["alice"]).expect("start kith");
    let (mut conn, _) = starttls(kith.c2s, test_ca().client_config(false, None))
        .await
        .expect("starttls");
    let mut mech = scram("SHA-256", ChannelBinding::Unsupported);
    assert_eq!(mech.name(), "SCRAM-SHA-256");
    let outcome = conn.sasl(mech.as_mut()).await.expect("sasl");
    assert!(
        matches!(outcome, SaslOutcome::Failure(_)),
        "'y' accepted while -PLUS is offered: {outcome:?}"
    );
}

#[tokio::test]
async fn plain_scram_without_binding_still_works() {
    let kith = Kith::start(&["alice"]).expect("start kith");
    let (mut conn, _) = starttls(kith.c2s, test_ca().client_config(false, None))
        .await
        .expect("starttls");
    let mut mech = scram("SHA-1", ChannelBinding::None);
    assert_eq!(mech.name(), "SCRAM-SHA-1");
    let outcome = conn.sasl(mech.as_mut()).await.expect("sasl");
    assert!(matches!(outcome, SaslOutcome::Success(_)), "{outcome:?}");
}
