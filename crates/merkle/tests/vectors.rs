//! The RFC 6962 test vectors used by the CT reference code, Trillian and transparency-dev,
//! plus the CVE-2012-2459 regression.

use kling_audit_merkle::{
    consistency_proof, empty_root, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion, Frontier, Hash, ProofError,
};

const INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(s: &str) -> Hash {
    let v = hex::decode(s).expect("test vector is hex");
    v.try_into().expect("test vector is 32 bytes")
}

fn hs(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn leaves() -> Vec<Hash> {
    INPUTS
        .iter()
        .map(|s| leaf_hash(&hex::decode(s).expect("test vector is hex")))
        .collect()
}

#[test]
fn leaf_hashes_match_vectors() {
    assert_eq!(leaves(), hs(&LEAF_HASHES));
}

#[test]
fn roots_of_first_n_leaves_match_vectors() {
    let l = leaves();
    assert_eq!(empty_root(), h(ROOTS[0]));
    let mut f = Frontier::new();
    for (n, expected) in ROOTS.iter().enumerate() {
        assert_eq!(root(&l[..n]), h(expected), "root({n})");
        assert_eq!(f.root(), h(expected), "frontier root({n})");
        if n < l.len() {
            f.push(l[n]);
        }
    }
}

#[test]
fn inclusion_proofs_match_vectors_and_verify() -> Result<(), ProofError> {
    let l = leaves();
    let root8 = h(ROOTS[8]);
    let leaf0 = hs(&[
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]);
    let leaf5 = hs(&[
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]);
    assert_eq!(inclusion_proof(0, 8, &l)?, leaf0);
    assert_eq!(inclusion_proof(5, 8, &l)?, leaf5);
    verify_inclusion(&l[0], 0, 8, &leaf0, &root8)?;
    verify_inclusion(&l[5], 5, 8, &leaf5, &root8)?;
    // The path of leaf 0 of 8 is also the consistency proof from size 1 to 8.
    assert_eq!(consistency_proof(1, 8, &l)?, leaf0);
    verify_consistency(1, 8, &h(ROOTS[1]), &root8, &leaf0)?;
    Ok(())
}

#[test]
fn consistency_proofs_match_vectors_and_verify() -> Result<(), ProofError> {
    let l = leaves();
    let p68 = hs(&[
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]);
    let p25 = hs(&[
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]);
    assert_eq!(consistency_proof(6, 8, &l)?, p68);
    assert_eq!(consistency_proof(2, 5, &l)?, p25);
    verify_consistency(6, 8, &h(ROOTS[6]), &h(ROOTS[8]), &p68)?;
    verify_consistency(2, 5, &h(ROOTS[2]), &h(ROOTS[5]), &p25)?;
    Ok(())
}

/// CVE-2012-2459: Bitcoin's tree duplicated an odd last node, so [1,2,3] and [1,2,3,3] shared
/// a root. RFC 6962's split never duplicates, and this must stay so.
#[test]
fn odd_last_leaf_is_not_duplicated_cve_2012_2459() {
    let three: Vec<Hash> = [b"1", b"2", b"3"].iter().map(|d| leaf_hash(*d)).collect();
    let mut four = three.clone();
    four.push(three[2]);
    assert_ne!(root(&three), root(&four));
    assert_ne!(
        Frontier::from_leaves(three.iter().copied()).root(),
        Frontier::from_leaves(four.iter().copied()).root()
    );
}

#[test]
fn verifiers_reject_degenerate_arguments() {
    let l = leaves();
    let r8 = h(ROOTS[8]);
    let r6 = h(ROOTS[6]);
    assert!(matches!(
        verify_inclusion(&l[0], 8, 8, &[], &r8),
        Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
    ));
    assert!(matches!(
        verify_inclusion(&l[0], 0, 0, &[], &r8),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    ));
    // A single-leaf tree: the empty proof works only when the leaf is the root.
    assert_eq!(verify_inclusion(&l[0], 0, 1, &[], &l[0]), Ok(()));
    assert!(verify_inclusion(&l[0], 0, 1, &[], &l[1]).is_err());
    assert!(matches!(
        verify_inclusion(&l[0], 0, 1, &[l[1]], &l[0]),
        Err(ProofError::WrongProofLength {
            expected: 0,
            actual: 1,
            ..
        })
    ));
    assert!(matches!(
        verify_consistency(8, 6, &r8, &r6, &[]),
        Err(ProofError::OldSizeExceedsNewSize {
            old_size: 8,
            new_size: 6
        })
    ));
    assert_eq!(verify_consistency(8, 8, &r8, &r8, &[]), Ok(()));
    assert!(verify_consistency(8, 8, &r8, &r6, &[]).is_err());
    assert!(verify_consistency(8, 8, &r8, &r8, &[r8]).is_err());
    assert_eq!(verify_consistency(0, 8, &empty_root(), &r8, &[]), Ok(()));
    assert!(verify_consistency(0, 8, &r6, &r8, &[]).is_err());
    assert!(verify_consistency(0, 8, &empty_root(), &r8, &[r8]).is_err());
    assert!(matches!(
        verify_consistency(6, 8, &r6, &r8, &[]),
        Err(ProofError::WrongProofLength {
            expected: 3,
            actual: 0,
            ..
        })
    ));
    // A proof with an extra trailing hash must fail on length, not be silently truncated.
    let mut long = consistency_proof(6, 8, &l).expect("sizes are valid");
    long.push(r8);
    assert!(matches!(
        verify_consistency(6, 8, &r6, &r8, &long),
        Err(ProofError::WrongProofLength {
            expected: 3,
            actual: 4,
            ..
        })
    ));
}
