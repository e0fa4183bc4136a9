//! The KMS key as the enclave's measured configuration names it: a full key ARN. A key id or an
//! alias would let whoever controls the account's aliases (or the host, through the region)
//! choose the key; an ARN fixes partition, region, account and key, and every KMS answer must
//! name exactly it.

use core::fmt;
use core::str::FromStr;

use crate::Error;

/// `arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyArn {
    text: String,
    region_end: usize,
    region_start: usize,
}

impl KeyArn {
    /// The key's region (e.g. `eu-central-1`).
    pub fn region(&self) -> &str {
        &self.text[self.region_start..self.region_end]
    }

    /// The ARN's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const NOT_A_KEY_ARN: Error =
    Error::InvalidArgument("not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)");

impl FromStr for KeyArn {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = text.split(':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(NOT_A_KEY_ARN);
        };
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let key_id = resource.strip_prefix("key/").ok_or(NOT_A_KEY_ARN)?;
        let valid = *arn == "arn"
            && matches!(*partition, "aws" | "aws-cn" | "aws-us-gov")
            && *service == "kms"
            && word(region)
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && (1..=64).contains(&key_id.len())
            && key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(NOT_A_KEY_ARN);
        }
        let region_start = arn.len() + partition.len() + service.len() + 3;
        Ok(Self {
            text: text.to_owned(),
            region_start,
            region_end: region_start + region.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_arns_only() {
        let arn: KeyArn =
            "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                .parse()
                .unwrap();
        assert_eq!(arn.region(), "eu-central-1");
        let mrk: KeyArn = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
            .parse()
            .unwrap();
        assert_eq!(mrk.region(), "us-gov-west-1");
        for bad in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/signer",
            "arn:aws:kms:eu-central-1:111122223333:alias/signer",
            "arn:aws:kms:eu-central-1:1111:key/abc",
            "arn:aws:s3:eu-central-1:111122223333:key/abc",
            "arn:aws:kms:EU:111122223333:key/abc",
            "arn:aws:kms:eu-central-1:111122223333:key/",
            "arn:aws:kms:eu-central-1:111122223333:key/a:b",
        ] {
            assert!(bad.parse::<KeyArn>().is_err(), "{bad}");
        }
    }
}
