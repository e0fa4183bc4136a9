//! The one intake for hostile bytes: everything the host passes in, client bodies and its own
//! records alike, becomes a domain type here, and nothing past this module sees a protobuf
//! message from the host. Each decoder is bounded and is a fuzzing target.

pub(crate) mod ethereum;
pub(crate) mod host;
pub(crate) mod import;
pub(crate) mod psbt;
pub(crate) mod stamped;
