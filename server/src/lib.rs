//! Kith's XMPP server.
