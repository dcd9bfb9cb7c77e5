//! DNS-01 through RFC 2136 dynamic updates signed with TSIG (RFC 8945): the
//! TXT record `_acme-challenge.NAME` added to and removed from the zone on
//! the admin's DNS server (BIND, Knot, PowerDNS, or a provider that speaks
//! RFC 2136). Messages are built and signed by `hickory-proto`; they go over
//! TCP (two-byte length prefix, RFC 1035 §4.2.2), one update per connection.

use std::time::Duration;

use hickory_proto::op::{update_message, Message, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::DnsUpdate;

/// Longest time one update may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// TTL of the challenge record: resolvers should not keep it.
const TTL: u32 = 60;

/// Add (`set`) or remove (`unset`) `value` at `record` (a full name).
pub async fn update(cfg: &DnsUpdate, set: bool, record: &str, value: &str) -> Result<(), String> {
    let message = build(cfg, set, record, value)?;
    tokio::time::timeout(TIMEOUT, exchange(&cfg.server, &message))
        .await
        .map_err(|_| {
            format!(
                "{} did not answer within {}s",
                cfg.server,
                TIMEOUT.as_secs()
            )
        })?
}

fn build(cfg: &DnsUpdate, set: bool, record: &str, value: &str) -> Result<Vec<u8>, String> {
    let name = Name::from_ascii(format!("{}.", record.trim_end_matches('.')))
        .map_err(|e| format!("{record} is not a DNS name: {e}"))?;
    let zone = Name::from_ascii(format!("{}.", cfg.zone.trim_end_matches('.')))
        .map_err(|e| format!("acme.dns_update_zone {} is not a DNS name: {e}", cfg.zone))?;
    if !zone.zone_of(&name) {
        return Err(format!(
            "{record} is not inside the zone {} (acme.dns_update_zone)",
            cfg.zone
        ));
    }
    let mut rrset = RecordSet::new(name.clone(), RecordType::TXT, 0);
    rrset.insert(
        Record::from_rdata(name, TTL, RData::TXT(TXT::new(vec![value.to_string()]))),
        0,
    );
    let mut message = if set {
        update_message::append(rrset, zone, false, false)
    } else {
        update_message::delete_by_rdata(rrset, zone, false)
    };
    let algorithm = match cfg.key_algorithm.as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => return Err(format!("TSIG algorithm {other} is not supported")),
    };
    let key_name = Name::from_ascii(&cfg.key_name)
        .map_err(|e| format!("acme.dns_update_key_name {}: {e}", cfg.key_name))?;
    let signer = TSigner::new(cfg.key_secret.clone(), algorithm, key_name, 300)
        .map_err(|e| format!("TSIG key: {e}"))?;
    let now = crate::certinfo::now().max(0) as u64;
    message
        .finalize(&signer, now)
        .map_err(|e| format!("cannot sign the update: {e}"))?;
    message
        .to_vec()
        .map_err(|e| format!("cannot encode the update: {e}"))
}

async fn exchange(server: &str, message: &[u8]) -> Result<(), String> {
    let mut tcp = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| format!("cannot connect to {server}: {e}"))?;
    let len = u16::try_from(message.len()).map_err(|_| "the update is too large".to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    tcp.write_all(&framed)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len)
        .await
        .map_err(|e| format!("{server} closed without answering: {e}"))?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let reply =
        Message::from_vec(&answer).map_err(|e| format!("{server} answered garbage: {e}"))?;
    match reply.metadata.response_code {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NotAuth => Err(format!("{server} refused the TSIG key (NOTAUTH): check acme.dns_update_key_name, _secret and _algorithm against the server's key")),
        ResponseCode::Refused => Err(format!("{server} refused the update (REFUSED): allow this key to update the zone (BIND: update-policy or allow-update)")),
        ResponseCode::NotZone => Err(format!("{server} is not authoritative for acme.dns_update_zone (NOTZONE)")),
        code => Err(format!("{server} answered {code}")),
    }
}
