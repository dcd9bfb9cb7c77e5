//! Small protocol modules, one file each.

pub mod avatar;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod csi;
pub mod disco;
pub mod fast;
pub mod ping;
pub mod private;
pub mod session;
pub mod time;
pub mod vcard;
pub mod version;
