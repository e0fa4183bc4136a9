//! Bitcoin rules as JSON people write: destinations as addresses of one named network, amounts
//! in satoshis. Converts to `pb::BitcoinRules` (addresses become their `scriptPubKey`s, checked
//! against the network) and back (scripts shown as hex and, where they are an address, as one).

use std::str::FromStr as _;

use bitcoin::{Address, Network, Script};
use signer_proto::pb;

use crate::Error;

/// `pb::BitcoinRules` as JSON (see the `.proto` for what each rule means).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitcoinRulesJson {
    /// The network the addresses are of: `bitcoin`, `testnet`, `testnet4`, `signet` or
    /// `regtest`.
    pub network: String,
    /// Addresses value may be paid to (change to the root's own keys is always allowed).
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Most satoshis per transaction, change not counted.
    pub max_sat_per_tx: u64,
    /// Most satoshis in any 24 hours.
    pub max_sat_per_day: u64,
    /// Most fee per transaction, in satoshis.
    pub max_fee_sat: u64,
    /// Most fee per virtual byte, in satoshis.
    pub max_fee_rate_sat_per_vb: u64,
    /// Whether `Sign` may sign client-computed digests under the root anyway.
    #[serde(default)]
    pub allow_blind_signing: bool,
}

impl BitcoinRulesJson {
    /// The wire form.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown network or an address that is not valid for it.
    pub fn to_proto(&self) -> Result<pb::BitcoinRules, Error> {
        let network = Network::from_str(&self.network)
            .map_err(|_| Error::InvalidArgument("unknown bitcoin network"))?;
        let destinations = self
            .destinations
            .iter()
            .map(|text| {
                Address::from_str(text)
                    .ok()
                    .and_then(|address| address.require_network(network).ok())
                    .map(|address| address.script_pubkey().to_bytes())
                    .ok_or(Error::InvalidArgument(
                        "a destination is not an address of the rules' network",
                    ))
            })
            .collect::<Result<_, _>>()?;
        Ok(pb::BitcoinRules {
            destinations,
            max_sat_per_tx: self.max_sat_per_tx,
            max_sat_per_day: self.max_sat_per_day,
            max_fee_sat: self.max_fee_sat,
            max_fee_rate_sat_per_vb: self.max_fee_rate_sat_per_vb,
            allow_blind_signing: self.allow_blind_signing,
        })
    }

    /// The rules as JSON, destinations written as addresses of `network` where they are one,
    /// as hex scripts otherwise or without a network (the wire form names none; `network` is
    /// then empty).
    pub fn from_proto(rules: &pb::BitcoinRules, network: Option<Network>) -> Self {
        Self {
            network: network.map(|n| n.to_string()).unwrap_or_default(),
            destinations: rules
                .destinations
                .iter()
                .map(|script| {
                    network
                        .and_then(|n| Address::from_script(Script::from_bytes(script), n).ok())
                        .map_or_else(|| hex::encode(script), |address| address.to_string())
                })
                .collect(),
            max_sat_per_tx: rules.max_sat_per_tx,
            max_sat_per_day: rules.max_sat_per_day,
            max_fee_sat: rules.max_fee_sat,
            max_fee_rate_sat_per_vb: rules.max_fee_rate_sat_per_vb,
            allow_blind_signing: rules.allow_blind_signing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_their_scripts_on_their_network_only() {
        // BIP-84's first receiving address, and BIP-86's.
        let json = BitcoinRulesJson {
            network: "bitcoin".into(),
            destinations: vec![
                "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu".into(),
                "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr".into(),
            ],
            max_sat_per_tx: 1,
            max_sat_per_day: 2,
            max_fee_sat: 3,
            max_fee_rate_sat_per_vb: 4,
            allow_blind_signing: false,
        };
        let wire = json.to_proto().unwrap();
        assert_eq!(
            hex::encode(&wire.destinations[0]),
            "0014c0cebcd6c3d3ca8c75dc5ec62ebe55330ef910e2"
        );
        assert_eq!(wire.destinations[1][..2], [0x51, 0x20]);
        assert_eq!(
            BitcoinRulesJson::from_proto(&wire, Some(Network::Bitcoin)),
            json
        );
        let shown = BitcoinRulesJson::from_proto(&wire, None);
        assert_eq!(shown.destinations[0], hex::encode(&wire.destinations[0]));
        let testnet = BitcoinRulesJson {
            network: "testnet".into(),
            ..json.clone()
        };
        assert!(testnet.to_proto().is_err());
        let unknown = BitcoinRulesJson {
            network: "moon".into(),
            ..json
        };
        assert!(unknown.to_proto().is_err());
    }
}
