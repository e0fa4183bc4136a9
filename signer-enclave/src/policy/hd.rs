//! An HD root's derivation rules: the subtrees under the root whose keys may sign and whose
//! public keys may be exported.

use signer_proto::pb;

use crate::Error;
use crate::hd::HdPath;

/// Most subtrees one policy names.
pub const MAX_SUBTREES: usize = 64;

/// Allowed subtrees, in the order given (distinct, each 1 to 255 deep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HdRules {
    subtrees: Vec<HdPath>,
}

impl HdRules {
    /// Validates the rules.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no subtree, more than [`MAX_SUBTREES`], the root itself
    /// (a subtree must name at least one step), a path deeper than 255, or a repeat.
    pub fn parse(rules: &pb::HdRules) -> Result<Self, Error> {
        if rules.subtrees.is_empty() || rules.subtrees.len() > MAX_SUBTREES {
            return Err(Error::InvalidArgument("hd rules need 1 to 64 subtrees"));
        }
        let mut subtrees = Vec::with_capacity(rules.subtrees.len());
        for subtree in &rules.subtrees {
            if subtree.indices.is_empty() {
                return Err(Error::InvalidArgument(
                    "an hd subtree names at least one step",
                ));
            }
            let path = HdPath::from_indices(&subtree.indices)?;
            if subtrees.contains(&path) {
                return Err(Error::InvalidArgument("hd rules repeat a subtree"));
            }
            subtrees.push(path);
        }
        Ok(Self { subtrees })
    }

    /// The canonical wire form.
    pub fn to_proto(&self) -> pb::HdRules {
        pb::HdRules {
            subtrees: self
                .subtrees
                .iter()
                .map(|path| pb::DerivationPath {
                    indices: path.indices(),
                })
                .collect(),
        }
    }

    /// Whether `path` lies in an allowed subtree (the subtree's own key included).
    pub fn allows(&self, path: &HdPath) -> bool {
        self.subtrees
            .iter()
            .any(|subtree| path.starts_with(subtree))
    }

    /// Refuses a path outside every allowed subtree.
    ///
    /// # Errors
    /// [`Error::Denied`].
    pub fn check(&self, path: &HdPath) -> Result<(), Error> {
        if self.allows(path) {
            Ok(())
        } else {
            Err(Error::Denied("path outside the root's allowed subtrees"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hd::HARDENED;

    fn rules(subtrees: &[&[u32]]) -> Result<HdRules, Error> {
        HdRules::parse(&pb::HdRules {
            subtrees: subtrees
                .iter()
                .map(|s| pb::DerivationPath {
                    indices: s.to_vec(),
                })
                .collect(),
        })
    }

    #[test]
    fn subtrees_bound_paths() {
        let account = [84 | HARDENED, HARDENED, HARDENED];
        let r = rules(&[&account]).unwrap();
        let at = |p: &[u32]| HdPath::from_indices(p).unwrap();
        assert!(r.allows(&at(&account)));
        assert!(r.allows(&at(&[84 | HARDENED, HARDENED, HARDENED, 0, 7])));
        // Another account, the same indices unhardened, a parent, the root: all outside.
        assert!(!r.allows(&at(&[84 | HARDENED, HARDENED, 1 | HARDENED, 0, 7])));
        assert!(!r.allows(&at(&[84, 0, 0, 0, 7])));
        assert!(!r.allows(&at(&[84 | HARDENED, HARDENED])));
        assert!(!r.allows(&HdPath::root()));
        assert!(matches!(r.check(&HdPath::root()), Err(Error::Denied(_))));
        assert_eq!(HdRules::parse(&r.to_proto()).unwrap(), r);
    }

    #[test]
    fn malformed_rules_are_refused() {
        let deep = vec![1u32; 256];
        for bad in [
            rules(&[]),
            rules(&[&[]]),
            rules(&[&deep]),
            rules(&[&[1], &[1]]),
            rules(&vec![&[1u32][..]; MAX_SUBTREES + 1]),
        ] {
            assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        let many: Vec<Vec<u32>> = (0..64u32).map(|i| vec![i]).collect();
        let many: Vec<&[u32]> = many.iter().map(Vec::as_slice).collect();
        assert!(rules(&many).is_ok());
    }
}
