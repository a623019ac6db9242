//! Merkle Tree Hash and inclusion proofs, exactly as defined in RFC 6962 section 2.1 (carried
//! over unchanged as RFC 9162 section 2.1), with SHA-256.
//!
//! The batched log device hashes each audit row once as a leaf ([`leaf_hash`]), takes the
//! batch's [`root`], signs that root once, and stores in every row its audit path
//! ([`all_inclusion_proofs`]) so a verifier can check a single row with [`verify_inclusion`].
//!
//! An inclusion proof does not by itself pin down the tree size: e.g. leaf 0's path in a tree of
//! 3 leaves also verifies as leaf 0 of a 4-leaf tree with the same root, because the RFC
//! algorithm performs the same hash steps for both. The root must therefore be signed together
//! with the tree size, and the verifier must take both from the signed statement.

use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// RFC 6962 2.1: domain separation prefix for leaves ...
const LEAF_PREFIX: u8 = 0x00;
/// ... and for interior nodes, so a leaf can never be passed off as a node (second preimage).
const NODE_PREFIX: u8 = 0x01;

/// Why an inclusion proof was refused or could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree (this includes every index of an empty tree).
    #[error("leaf index {index} is out of range for a Merkle tree of size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    /// The proof has the wrong number of hashes for this (index, tree size): it was cut short,
    /// padded, or belongs to a different index or tree size.
    #[error(
        "inclusion proof for leaf {index} of a tree of size {tree_size} must have {expected} \
         hashes, but has {actual}"
    )]
    WrongProofLength {
        index: u64,
        tree_size: u64,
        expected: usize,
        actual: usize,
    },
    /// The proof is well-formed but does not lead to the given root: the leaf, a proof hash, the
    /// index or the root is not what was signed.
    #[error(
        "inclusion proof for leaf {index} of a tree of size {tree_size} does not match the root \
         hash"
    )]
    RootMismatch { index: u64, tree_size: u64 },
}

/// RFC 6962 2.1: `MTH({d(0)}) = SHA-256(0x00 || d(0))`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(leaf);
    h.finalize().into()
}

/// RFC 6962 2.1: `SHA-256(0x01 || MTH(left) || MTH(right))`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 6962 2.1: for n > 1, `k` is the largest power of two smaller than `n`; the left subtree
/// holds `D[0:k]` and the right one `D[k:n]`.
fn split_point(n: usize) -> usize {
    debug_assert!(n > 1, "only trees of two or more leaves are split");
    1 << (n - 1).ilog2()
}

/// Merkle Tree Hash over already-hashed leaves (the device hashes each row once).
///
/// RFC 6962 2.1: the empty tree's hash is SHA-256 of the empty string; a single leaf's is its
/// leaf hash; otherwise `node_hash(MTH(D[0:k]), MTH(D[k:n]))`. The recursion is `log2(n)` deep.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => Sha256::digest([]).into(),
        [only] => *only,
        _ => {
            let (left, right) = leaf_hashes.split_at(split_point(leaf_hashes.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree over `leaf_hashes`.
///
/// RFC 6962 2.1.1 `PATH(m, D[n])`: the hashes are ordered from the leaf's sibling up to the
/// root's child. Costs O(n) hashing. Never panics: `Err` for `index >= leaf_hashes.len()`.
/// The devices use `all_inclusion_proofs`; this one is the reference the tests hold it to.
#[cfg(test)]
pub fn inclusion_proof(leaf_hashes: &[Hash], index: usize) -> Result<Vec<Hash>, MerkleError> {
    if index >= leaf_hashes.len() {
        return Err(MerkleError::IndexOutOfRange {
            // usize is at most 64 bits on every target Rust supports, so this is lossless.
            index: index as u64,
            tree_size: leaf_hashes.len() as u64,
        });
    }
    // Walk down from the root: at each split, the subtree not holding `index` is the sibling.
    // The RFC's recursion appends that sibling after the deeper part of the path, so the
    // top-down walk collects the path in reverse.
    let mut path = Vec::new();
    let mut subtree = leaf_hashes;
    let mut m = index;
    while subtree.len() > 1 {
        let k = split_point(subtree.len());
        let (left, right) = subtree.split_at(k);
        if m < k {
            // PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            path.push(root(right));
            subtree = left;
        } else {
            // PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
            path.push(root(left));
            subtree = right;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// Every leaf's inclusion proof at once, `result[i] == inclusion_proof(leaf_hashes, i)`.
///
/// Each subtree hash is computed once and appended to the path of every leaf on the other side
/// of its split, so the total cost is O(n) hashes and O(n log n) copies. Empty input gives an
/// empty list.
pub fn all_inclusion_proofs(leaf_hashes: &[Hash]) -> Vec<Vec<Hash>> {
    // A path is at most ceil(log2(n)) long; reserving that avoids regrowth while pushing.
    let depth = leaf_hashes.len().next_power_of_two().trailing_zeros() as usize;
    let mut proofs: Vec<Vec<Hash>> = (0..leaf_hashes.len())
        .map(|_| Vec::with_capacity(depth))
        .collect();
    if !leaf_hashes.is_empty() {
        fill_proofs(leaf_hashes, &mut proofs);
    }
    proofs
}

/// Appends to `proofs[i]` the RFC 6962 2.1.1 path of leaf `i` within the subtree `leaves`, and
/// returns that subtree's MTH. `proofs` and `leaves` have the same, nonzero length.
fn fill_proofs(leaves: &[Hash], proofs: &mut [Vec<Hash>]) -> Hash {
    match leaves {
        [only] => *only,
        _ => {
            let k = split_point(leaves.len());
            let (left_leaves, right_leaves) = leaves.split_at(k);
            let (left_proofs, right_proofs) = proofs.split_at_mut(k);
            // The deeper part of each path comes first (leaf-to-root order), so recurse before
            // appending this level's sibling.
            let left = fill_proofs(left_leaves, left_proofs);
            let right = fill_proofs(right_leaves, right_proofs);
            left_proofs.iter_mut().for_each(|p| p.push(right));
            right_proofs.iter_mut().for_each(|p| p.push(left));
            node_hash(&left, &right)
        }
    }
}

/// The number of hashes in the inclusion proof of leaf `index` of a tree of `tree_size` leaves
/// (`index < tree_size`): the iteration count of the RFC 9162 2.1.3.2 loop, without hashing.
fn proof_len(index: u64, tree_size: u64) -> usize {
    let (mut fnode, mut snode) = (index, tree_size - 1);
    let mut len = 0;
    while snode != 0 {
        if fnode & 1 == 0 && fnode == snode {
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        }
        fnode >>= 1;
        snode >>= 1;
        len += 1;
    }
    len
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `tree_size` leaves whose MTH is
/// `root`, given its inclusion proof: RFC 9162 2.1.3.2.
///
/// `Ok(())` when the proof is valid. The length is checked first so a truncated or padded proof
/// is reported as such rather than as a root mismatch.
#[cfg(test)]
pub fn verify_inclusion(
    index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    // Step 5's last check: the computed root must be the given one.
    if root_from_inclusion(index, tree_size, leaf_hash, proof)? != *root {
        return Err(MerkleError::RootMismatch { index, tree_size });
    }
    Ok(())
}

/// The root that `leaf_hash` at `index` of a tree of `tree_size` leaves and its inclusion proof
/// lead to: RFC 9162 2.1.3.2 without the final comparison with a given root (the console shows
/// it beside the batch statement's root).
pub fn root_from_inclusion(
    index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    path_root(index, tree_size, leaf_hash, proof, |_, l, r| {
        node_hash(l, r)
    })
}

/// The last interior node computed at each step of an inclusion path, with the two children it
/// was computed from. Consecutive leaves of one tree share most of their path, so a verifier that
/// follows their proofs in order with one memo computes each interior node about once instead
/// of once per leaf below it. A node is reused only when both children are byte for byte the
/// ones it was computed from, so the result is exactly that of `root_from_inclusion`.
#[derive(Debug, Default)]
pub struct NodeMemo {
    steps: Vec<(Hash, Hash, Hash)>,
}

impl NodeMemo {
    fn node(&mut self, step: usize, left: &Hash, right: &Hash) -> Hash {
        if let Some((l, r, n)) = self.steps.get(step)
            && l == left
            && r == right
        {
            return *n;
        }
        let n = node_hash(left, right);
        if step < self.steps.len() {
            self.steps[step] = (*left, *right, n);
        } else if step == self.steps.len() {
            self.steps.push((*left, *right, n));
        }
        n
    }
}

/// Verifies an inclusion proof as `verify_inclusion` (the plain form, which the tests hold this
/// one to), reusing the interior nodes of the proofs followed before with `memo`.
pub fn verify_inclusion_memo(
    index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
    memo: &mut NodeMemo,
) -> Result<(), MerkleError> {
    let r = path_root(index, tree_size, leaf_hash, proof, |step, l, r| {
        memo.node(step, l, r)
    })?;
    if r != *root {
        return Err(MerkleError::RootMismatch { index, tree_size });
    }
    Ok(())
}

/// RFC 9162 2.1.3.2 without the final comparison: `node(step, left, right)` hashes the interior
/// node at step `step` of the path.
fn path_root(
    index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    mut node: impl FnMut(usize, &Hash, &Hash) -> Hash,
) -> Result<Hash, MerkleError> {
    // Step 1: the index must be inside the tree.
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size });
    }
    let expected = proof_len(index, tree_size);
    let wrong_length = MerkleError::WrongProofLength {
        index,
        tree_size,
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Steps 2 and 3. `fnode`/`snode` are the RFC's `fn`/`sn` (`fn` is a Rust keyword).
    let mut fnode = index;
    let mut snode = tree_size - 1;
    let mut r = *leaf_hash;
    // Step 4.
    for (step, p) in proof.iter().enumerate() {
        // 4a: the path is longer than the tree is deep (already excluded by the length check;
        // kept so the loop is the RFC's algorithm on its own).
        if snode == 0 {
            return Err(wrong_length);
        }
        // 4b: `r` is a right child (odd index), or the last node of its level, which has no
        // right sibling and is promoted unchanged up the levels skipped below.
        if fnode & 1 == 1 || fnode == snode {
            r = node(step, p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node(step, &r, p);
        }
        // 4c.
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5: the path must have reached the root.
    if snode != 0 {
        return Err(wrong_length);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        let bytes = hex::decode(s).expect("test vector is hex");
        bytes.try_into().expect("test vector is 32 bytes")
    }

    fn hs(list: &[&str]) -> Vec<Hash> {
        list.iter().map(|s| h(s)).collect()
    }

    // The RFC 6962 reference test data of the certificate-transparency implementations
    // (merkle_tree_test.cc and its ports): eight leaves, given as hex byte strings.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    fn reference_leaf_hashes() -> Vec<Hash> {
        LEAVES
            .iter()
            .map(|l| leaf_hash(&hex::decode(l).expect("hex")))
            .collect()
    }

    /// SHA-256 of the empty string: MTH of the empty list (RFC 6962 2.1).
    const EMPTY_ROOT: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    // Roots of the trees over the first 1..=8 reference leaves. These are the published CT
    // reference roots; each was also recomputed by an independent Python 3 hashlib script that
    // implements the RFC's recursive MTH definition literally (kept outside the repository).
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    // (leaf index, tree size, PATH) for every leaf of every tree of 1..=8 reference leaves,
    // generated by the same independent Python script from the RFC 6962 2.1.1 recursive PATH
    // definition. The entries published in the CT reference tests (PATH(0, D[8]),
    // PATH(5, D[8]), PATH(2, D[3]), PATH(1, D[5]), PATH(0, D[1])) agree with them.
    const PATHS: &[(usize, usize, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            2,
            &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
        ),
        (
            1,
            2,
            &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
        ),
        (
            0,
            3,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            ],
        ),
        (
            1,
            3,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            0,
            4,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            ],
        ),
        (
            1,
            4,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            ],
        ),
        (
            2,
            4,
            &[
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            ],
        ),
        (
            3,
            4,
            &[
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            ],
        ),
        (
            0,
            5,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            2,
            5,
            &[
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            3,
            5,
            &[
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            4,
            5,
            &["d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
        ),
        (
            0,
            6,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            ],
        ),
        (
            1,
            6,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            ],
        ),
        (
            2,
            6,
            &[
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            ],
        ),
        (
            3,
            6,
            &[
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            ],
        ),
        (
            4,
            6,
            &[
                "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            5,
            6,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            0,
            7,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e",
            ],
        ),
        (
            1,
            7,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e",
            ],
        ),
        (
            2,
            7,
            &[
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e",
            ],
        ),
        (
            3,
            7,
            &[
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e",
            ],
        ),
        (
            4,
            7,
            &[
                "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            5,
            7,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            1,
            8,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            2,
            8,
            &[
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            3,
            8,
            &[
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            4,
            8,
            &[
                "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            6,
            8,
            &[
                "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            7,
            8,
            &[
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    /// Leaf `i` of the larger test trees: `i` as 4 big-endian bytes, which also makes every leaf
    /// distinct.
    fn counter_leaf_hashes(n: usize) -> Vec<Hash> {
        (0..n as u32).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    // Roots of trees over `counter_leaf_hashes(n)`, computed by the same independent Python
    // script (odd sizes, powers of two and their neighbours exercise every split shape).
    const BIG_ROOTS: &[(usize, &str)] = &[
        (
            9,
            "47c3f22a08fcf88c58c627b1f49fdb311cc1ca7c6fa52aaac4d7ef23db6fdd2a",
        ),
        (
            10,
            "fbb74a3657bfc0e7d6ded557205cc20988299681eb8abd6d59c4c6b0e881e21d",
        ),
        (
            11,
            "c6f6cabfafd14002367cc9af59d18ac21680938eeb50173d91e7a576d0c823fa",
        ),
        (
            12,
            "ce7f049d23b4ff65974eb253ff9b6818de6a87431eb4b47342ec100a7e025a5a",
        ),
        (
            13,
            "422d634c508507e68ab894b896e17abf4b1aca1fc81d2cd201e82b5221aa49c3",
        ),
        (
            14,
            "ede7b9268b5a05ff3bd53678c92e8a6ea389738d51835d17bf495d6382dc1d04",
        ),
        (
            15,
            "7db56ed8dcce10bd14429c8c6e008b8aa0305b3baf17f9a2fdb25ebda77df233",
        ),
        (
            16,
            "62a77d6fd48269288f766d07046e320b07fa34c21e57f78a45e110768dcf9308",
        ),
        (
            17,
            "cdf8626d8466c0ffcb8713435d2cf05c3d1f1cbe38af2753713ed9b255d55935",
        ),
        (
            18,
            "c4cff3bcb8d8d630fa47ed04a5ebb3319f0ad582ecaa81f50ddb1624f824ee6e",
        ),
        (
            19,
            "52c034d4d419f0f946387352a5e0a7e1e3a06c7fd3331a0406f68f4d876519f6",
        ),
        (
            20,
            "4f0dbfd76306f66b9504ceca4325c2d11be6c3c3d5cd196aaba8cbf7423f0e42",
        ),
        (
            31,
            "8ad3a1ed67ddd52b0fd9bc61c4624bcf0df1d3987ae0c6fdb0fab30935a0b42e",
        ),
        (
            32,
            "bdfdcbbb20d6327627639273378a289c6bdb22b22d1a45cae37f6e9f0761bf3c",
        ),
        (
            33,
            "aaad7b2db7d2adb118c71a990110cf5f6b049b674ff0767dfd7bf671c7c69747",
        ),
        (
            100,
            "740488a3c43c052bfb21dd92199095914175ef355679e09a446f569db63e3f5b",
        ),
        (
            1000,
            "ed58fe22105717ceedf760a43eedfb173a60c44ef40fd61b6cd86bd4ebb59b61",
        ),
        (
            1024,
            "8f4dfea286d2b9cbeca4439f8e933804b817b20b9c8551d21f80522a18c3f69c",
        ),
        (
            1025,
            "fe46b331dab3aeef4776e679b11bc7e5120a9f7aa40c111bdc88f8c3a25b7210",
        ),
    ];

    // SHA-256 over the concatenation of every leaf's PATH (leaf 0 first) for
    // `counter_leaf_hashes(n)`, computed by the same independent Python script.
    const PROOF_DIGESTS: &[(usize, &str)] = &[
        (
            13,
            "f655bc8f68a4d933d1313a2acc3103dc5096c12c8d0d3aac77424e923ad4b97c",
        ),
        (
            100,
            "db69875b8d801edec55b52d5541f8a5bcb4120f1bf94cd191694369d789a07e4",
        ),
        (
            1000,
            "84e47fc3c1a012f10a928efdbc390d9969610c6a43426a68fc3fec7101d9261f",
        ),
    ];

    #[test]
    fn roots_match_reference_vectors() {
        let leaves = reference_leaf_hashes();
        assert_eq!(root(&[]), h(EMPTY_ROOT));
        for (n, expected) in (1..=8).zip(ROOTS) {
            assert_eq!(root(&leaves[..n]), h(expected), "tree size {n}");
        }
    }

    #[test]
    fn paths_match_reference_vectors() {
        let leaves = reference_leaf_hashes();
        assert_eq!(
            PATHS.len(),
            (1..=8).sum::<usize>(),
            "every leaf of every size 1..=8"
        );
        for &(m, n, expected) in PATHS {
            let expected = hs(expected);
            assert_eq!(
                inclusion_proof(&leaves[..n], m).unwrap(),
                expected,
                "PATH({m}, D[{n}])"
            );
            assert_eq!(
                all_inclusion_proofs(&leaves[..n])[m],
                expected,
                "PATH({m}, D[{n}])"
            );
            let root = h(ROOTS[n - 1]);
            assert_eq!(
                verify_inclusion(m as u64, n as u64, &leaves[m], &expected, &root),
                Ok(())
            );
        }
    }

    #[test]
    fn larger_trees_match_reference_vectors() {
        for &(n, expected) in BIG_ROOTS {
            assert_eq!(root(&counter_leaf_hashes(n)), h(expected), "tree size {n}");
        }
        for &(n, expected) in PROOF_DIGESTS {
            let leaves = counter_leaf_hashes(n);
            let proofs = all_inclusion_proofs(&leaves);
            let mut digest = Sha256::new();
            proofs.iter().flatten().for_each(|p| digest.update(p));
            assert_eq!(Hash::from(digest.finalize()), h(expected), "tree size {n}");
            let root = root(&leaves);
            for (i, proof) in proofs.iter().enumerate() {
                assert_eq!(
                    verify_inclusion(i as u64, n as u64, &leaves[i], proof, &root),
                    Ok(())
                );
            }
        }
    }

    #[test]
    fn single_leaf_tree_has_empty_proof() {
        let leaf = leaf_hash(b"only row");
        assert_eq!(root(&[leaf]), leaf);
        assert_eq!(inclusion_proof(&[leaf], 0), Ok(vec![]));
        assert_eq!(all_inclusion_proofs(&[leaf]), vec![Vec::<Hash>::new()]);
        assert_eq!(verify_inclusion(0, 1, &leaf, &[], &leaf), Ok(()));
        assert_eq!(
            verify_inclusion(0, 1, &leaf, &[leaf], &leaf),
            Err(MerkleError::WrongProofLength {
                index: 0,
                tree_size: 1,
                expected: 0,
                actual: 1
            })
        );
        let other = leaf_hash(b"other row");
        assert_eq!(
            verify_inclusion(0, 1, &other, &[], &leaf),
            Err(MerkleError::RootMismatch {
                index: 0,
                tree_size: 1
            })
        );
    }

    #[test]
    fn empty_tree() {
        assert!(all_inclusion_proofs(&[]).is_empty());
        assert_eq!(
            inclusion_proof(&[], 0),
            Err(MerkleError::IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
        let empty = h(EMPTY_ROOT);
        assert_eq!(
            verify_inclusion(0, 0, &empty, &[], &empty),
            Err(MerkleError::IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
    }

    #[test]
    fn index_out_of_range() {
        let leaves = reference_leaf_hashes();
        let root = h(ROOTS[7]);
        assert_eq!(
            inclusion_proof(&leaves, 8),
            Err(MerkleError::IndexOutOfRange {
                index: 8,
                tree_size: 8
            })
        );
        assert!(inclusion_proof(&leaves, usize::MAX).is_err());
        let proof = inclusion_proof(&leaves, 7).unwrap();
        for index in [8, 9, u64::MAX] {
            assert_eq!(
                verify_inclusion(index, 8, &leaves[7], &proof, &root),
                Err(MerkleError::IndexOutOfRange {
                    index,
                    tree_size: 8
                })
            );
        }
    }

    #[test]
    fn proof_too_long_or_too_short() {
        let leaves = reference_leaf_hashes();
        let root = h(ROOTS[7]);
        let proof = inclusion_proof(&leaves, 5).unwrap();
        let short = &proof[..2];
        assert_eq!(
            verify_inclusion(5, 8, &leaves[5], short, &root),
            Err(MerkleError::WrongProofLength {
                index: 5,
                tree_size: 8,
                expected: 3,
                actual: 2
            })
        );
        let mut long = proof.clone();
        long.push(root);
        assert_eq!(
            verify_inclusion(5, 8, &leaves[5], &long, &root),
            Err(MerkleError::WrongProofLength {
                index: 5,
                tree_size: 8,
                expected: 3,
                actual: 4
            })
        );
        assert!(matches!(
            verify_inclusion(5, 8, &leaves[5], &[], &root),
            Err(MerkleError::WrongProofLength {
                expected: 3,
                actual: 0,
                ..
            })
        ));
        // Extreme sizes must not overflow or loop: the last leaf of a 2^64 - 1 leaf tree needs
        // a 63-hash path (it is the last node of every level, so skips one level).
        assert!(matches!(
            verify_inclusion(u64::MAX - 1, u64::MAX, &leaves[0], &proof, &root),
            Err(MerkleError::WrongProofLength {
                expected: 63,
                actual: 3,
                ..
            })
        ));
    }

    #[test]
    fn proof_does_not_bind_tree_size() {
        // Documented limitation of RFC 6962/9162 inclusion proofs (see the module docs): leaf 0
        // of 3 takes the same hash steps as leaf 0 of 4, so the same proof and root verify for
        // both sizes. The size has to come from the signed statement alongside the root.
        let leaves = reference_leaf_hashes();
        let proof = inclusion_proof(&leaves[..3], 0).unwrap();
        let root = h(ROOTS[2]);
        assert_eq!(verify_inclusion(0, 3, &leaves[0], &proof, &root), Ok(()));
        assert_eq!(verify_inclusion(0, 4, &leaves[0], &proof, &root), Ok(()));
        assert!(verify_inclusion(0, 5, &leaves[0], &proof, &root).is_err());
    }

    #[test]
    fn error_messages() {
        let e = MerkleError::WrongProofLength {
            index: 5,
            tree_size: 8,
            expected: 3,
            actual: 2,
        };
        assert_eq!(
            e.to_string(),
            "inclusion proof for leaf 5 of a tree of size 8 must have 3 hashes, but has 2"
        );
        let e = MerkleError::IndexOutOfRange {
            index: 8,
            tree_size: 8,
        };
        assert_eq!(
            e.to_string(),
            "leaf index 8 is out of range for a Merkle tree of size 8"
        );
        let e = MerkleError::RootMismatch {
            index: 5,
            tree_size: 8,
        };
        assert_eq!(
            e.to_string(),
            "inclusion proof for leaf 5 of a tree of size 8 does not match the root hash"
        );
    }

    /// A different construction of the same tree, for cross-checking [`root`]: hash adjacent
    /// pairs level by level, promoting a level's odd last node unchanged (RFC 9162 2.1.3.1
    /// describes the tree this way too).
    fn bottom_up_root(leaves: &[Hash]) -> Hash {
        if leaves.is_empty() {
            return Sha256::digest([]).into();
        }
        let mut level = leaves.to_vec();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [single] => *single,
                    _ => unreachable!("chunks(2)"),
                })
                .collect();
        }
        level[0]
    }

    /// For each hash of PATH(m, D[n]), leaf-to-root: whether the sibling is on the right. Taken
    /// from the recursive RFC 6962 2.1.1 definition; two (index, size) pairs with the same shape
    /// run identical hash steps in verification.
    fn path_shape(m: u64, n: u64) -> Vec<bool> {
        if n <= 1 {
            return vec![];
        }
        let k = 1 << (n - 1).ilog2();
        let mut shape;
        if m < k {
            shape = path_shape(m, k);
            shape.push(true);
        } else {
            shape = path_shape(m - k, n - k);
            shape.push(false);
        }
        shape
    }

    fn flip(hash: &Hash, byte: usize, mask: u8) -> Hash {
        let mut out = *hash;
        out[byte] ^= mask;
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_trees(
            data in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..=300),
            pick in any::<usize>(),
            data_byte in any::<usize>(),
            mask in 1u8..=255,
        ) {
            // The 4-byte index prefix makes every leaf distinct, so no two subtrees share a hash
            // and swapping index or size can only verify where the hash steps are identical.
            let rows: Vec<Vec<u8>> = data
                .iter()
                .enumerate()
                .map(|(i, d)| [&(i as u32).to_be_bytes()[..], d].concat())
                .collect();
            let leaves: Vec<Hash> = rows.iter().map(|r| leaf_hash(r)).collect();
            let n = leaves.len();
            let size = n as u64;
            let root = root(&leaves);
            prop_assert_eq!(root, bottom_up_root(&leaves));

            let proofs = all_inclusion_proofs(&leaves);
            prop_assert_eq!(proofs.len(), n);
            for (i, proof) in proofs.iter().enumerate() {
                prop_assert_eq!(proof, &inclusion_proof(&leaves, i).unwrap());
                prop_assert_eq!(verify_inclusion(i as u64, size, &leaves[i], proof, &root), Ok(()));
            }
            // The same, leaf after leaf with one memo of interior nodes; the memo stays warm for
            // the tampered checks below, which must fail just as without it.
            let mut memo = NodeMemo::default();
            for (i, proof) in proofs.iter().enumerate() {
                let got = verify_inclusion_memo(i as u64, size, &leaves[i], proof, &root, &mut memo);
                prop_assert_eq!(got, Ok(()));
            }

            let s = pick % n;
            let (leaf, proof) = (&leaves[s], &proofs[s]);
            let idx = s as u64;
            let mismatch = Err(MerkleError::RootMismatch { index: idx, tree_size: size });
            // Verification of leaf `s` in the original tree, with the given parts swapped in.
            let mut check = |leaf: &Hash, proof: &[Hash], root: &Hash| {
                let plain = verify_inclusion(idx, size, leaf, proof, root);
                let memo = verify_inclusion_memo(idx, size, leaf, proof, root, &mut memo);
                assert_eq!(plain, memo);
                plain
            };

            // A changed row.
            let mut row = rows[s].clone();
            let at = data_byte % row.len();
            row[at] ^= mask;
            prop_assert_eq!(check(&leaf_hash(&row), proof, &root), mismatch.clone());

            // Any flipped byte of the leaf hash, of any proof hash, or of the root.
            for b in 0..32 {
                prop_assert_eq!(check(&flip(leaf, b, mask), proof, &root), mismatch.clone());
                prop_assert_eq!(check(leaf, proof, &flip(&root, b, mask)), mismatch.clone());
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j] = flip(&bad[j], b, mask);
                    prop_assert_eq!(check(leaf, &bad, &root), mismatch.clone());
                }
            }

            // Any other index, inside or outside the tree.
            for other in (0..size + 2).chain([u64::MAX]).filter(|&o| o != idx) {
                let result = verify_inclusion(other, size, leaf, proof, &root);
                prop_assert!(result.is_err(), "index {}", other);
            }

            // Any other tree size fails, except where the RFC algorithm runs exactly the same
            // hash steps (see proof_does_not_bind_tree_size).
            let shape = path_shape(idx, size);
            for other in (0..=2 * size + 1).chain([u64::MAX]).filter(|&o| o != size) {
                let result = verify_inclusion(idx, other, leaf, proof, &root);
                if idx >= other {
                    let out_of_range =
                        MerkleError::IndexOutOfRange { index: idx, tree_size: other };
                    prop_assert_eq!(result, Err(out_of_range));
                } else {
                    let same_steps = path_shape(idx, other) == shape;
                    prop_assert_eq!(result.is_ok(), same_steps, "size {}", other);
                }
            }
        }
    }
}
