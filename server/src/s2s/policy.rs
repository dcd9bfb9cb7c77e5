//! The admin's federation policy: on/off, allow list, deny list. Every
//! refusal is logged under the `kith::federation` target with its reason.

use crate::config::S2s;

/// Whether `domain` may federate with this server; the reason when not.
pub fn check(cfg: &S2s, domain: &str) -> Result<(), &'static str> {
    if !cfg.enabled {
        return Err("federation is turned off");
    }
    let listed = |list: &[String]| list.iter().any(|d| d.eq_ignore_ascii_case(domain));
    if listed(&cfg.deny) {
        return Err("the domain is on the deny list");
    }
    if !cfg.allow.is_empty() && !listed(&cfg.allow) {
        return Err("the domain is not on the allow list");
    }
    Ok(())
}

/// Whether the admin tolerates invalid certificates from `domain`.
pub fn insecure(cfg: &S2s, domain: &str) -> bool {
    cfg.insecure_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_allow_restricts() {
        let mut c = S2s::default();
        assert!(check(&c, "a.example").is_ok());
        c.deny = vec!["A.example".into()];
        assert!(check(&c, "a.example").is_err());
        c.deny.clear();
        c.allow = vec!["b.example".into()];
        assert!(check(&c, "a.example").is_err());
        assert!(check(&c, "b.example").is_ok());
        c.enabled = false;
        assert!(check(&c, "b.example").is_err());
    }
}
