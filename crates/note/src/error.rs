//! Error types, one per format, each naming the field or line that failed.
//!
//! Errors never echo untrusted text at length: they carry positions, sizes and short fixed
//! reasons, plus key names, which are public identifiers.

/// Why a signed note could not be parsed, built or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The bytes are not valid UTF-8.
    #[error("note is not valid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A control character other than newline (including DEL).
    #[error("note contains control character 0x{byte:02x} at byte {offset}")]
    ControlCharacter {
        /// Byte offset of the character.
        offset: usize,
        /// The character's value.
        byte: u8,
    },
    /// The note text is empty or does not end with a newline.
    #[error("note text must be non-empty and end with a newline")]
    TextNotNewlineTerminated,
    /// No empty line separates text from signatures.
    #[error("note has no empty line before its signatures")]
    MissingSignatureBlock,
    /// The signature block is empty or its last line lacks a newline.
    #[error("note signature block is empty or not newline-terminated")]
    UnterminatedSignatureBlock,
    /// A signature line breaks the `— <name> <base64>` grammar.
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignatureLine {
        /// 1-based index of the line within the signature block.
        line: usize,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// More signature lines than this implementation reads.
    #[error("note has more than {max} signatures")]
    TooManySignatures {
        /// The cap, [`MAX_SIGNATURES`](crate::MAX_SIGNATURES).
        max: usize,
    },
    /// A key name that is empty, contains a space or contains `+`.
    #[error("invalid key name {name:?}")]
    InvalidKeyName {
        /// The rejected name.
        name: String,
    },
    /// A signature value shorter than one byte.
    #[error("signature by {name} is empty")]
    EmptySignature {
        /// The key name.
        name: String,
    },
    /// Two trusted verifiers share a name and key ID, so a signature cannot be attributed.
    #[error("two trusted keys are named {name} with key ID {key_id:08x}")]
    AmbiguousVerifier {
        /// The shared name.
        name: String,
        /// The shared key ID.
        key_id: u32,
    },
    /// A signature from a trusted key does not verify.
    #[error("signature by trusted key {name}+{key_id:08x} does not verify")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// No signature is from a trusted key.
    #[error("none of the note's {signatures} signatures is from a trusted key")]
    NoTrustedSignature {
        /// How many signature lines the note carries.
        signatures: usize,
    },
}

/// Why a key string could not be decoded or a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not `<name>+<id>+<key>` (or `PRIVATE+KEY+<name>+<id>+<key>`).
    #[error("{kind} key must have {expected} '+'-separated parts")]
    WrongPartCount {
        /// "verifier" or "signer".
        kind: &'static str,
        /// The number of parts required.
        expected: usize,
    },
    /// A signer key not starting with `PRIVATE+KEY+`.
    #[error("signer key must start with PRIVATE+KEY+")]
    NotPrivateKey,
    /// The key name breaks the note rules.
    #[error("invalid key name {name:?}")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The key ID field is not 8 hex digits.
    #[error("key ID must be 8 hex digits")]
    MalformedKeyId,
    /// The key field is not canonical padded standard base64.
    #[error("key material is not canonical base64")]
    InvalidBase64,
    /// The key type byte is not one this type accepts.
    #[error("unsupported key type 0x{found:02x}")]
    UnsupportedKeyType {
        /// The type byte found.
        found: u8,
    },
    /// The key material has the wrong length.
    #[error("key material is {actual} bytes, expected {expected}")]
    WrongKeyLength {
        /// Bytes required after the type byte.
        expected: usize,
        /// Bytes found after the type byte.
        actual: usize,
    },
    /// The encoded key ID does not match the key.
    #[error("key ID {encoded:08x} does not match the key, which has ID {computed:08x}")]
    KeyIdMismatch {
        /// The ID written in the key string.
        encoded: u32,
        /// The ID computed from name, type and public key.
        computed: u32,
    },
    /// 32 bytes that are not a valid Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
}

/// Why a checkpoint body could not be parsed or formatted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is empty or its last line lacks a newline.
    #[error("checkpoint must end with a newline")]
    NotNewlineTerminated,
    /// Fewer than the three mandatory lines.
    #[error("checkpoint has {lines} lines, needs at least 3")]
    TooFewLines {
        /// Lines found.
        lines: usize,
    },
    /// A control character other than the line terminators (including DEL).
    #[error("checkpoint line {line} contains a control character")]
    ControlCharacter {
        /// 1-based line number.
        line: usize,
    },
    /// The origin line is empty.
    #[error("checkpoint origin is empty")]
    EmptyOrigin,
    /// The size line is not canonical ASCII decimal that fits in 64 bits.
    #[error("checkpoint size line is not canonical decimal: {reason}")]
    InvalidSize {
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The root line is not canonical base64 of 32 bytes.
    #[error("checkpoint root line is not base64 of 32 bytes")]
    InvalidRoot,
    /// An extension line is empty.
    #[error("checkpoint extension line {line} is empty")]
    EmptyExtension {
        /// 1-based line number.
        line: usize,
    },
    /// The checkpoint text inside a note did not parse.
    #[error("signed note: {0}")]
    Note(#[from] NoteError),
}

/// Why a cosignature could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The signed text is not a valid checkpoint.
    #[error("cosigned text is not a checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A timestamp above 2^63 - 1.
    #[error("timestamp {timestamp} exceeds 2^63 - 1")]
    TimestampTooLarge {
        /// The rejected timestamp.
        timestamp: u64,
    },
    /// The signature line is not by this cosigner.
    #[error("signature is by {name}+{key_id:08x}, not by this cosigner")]
    WrongKey {
        /// Name on the signature line.
        name: String,
        /// Key ID on the signature line.
        key_id: u32,
    },
    /// The signature is not 8 + 64 bytes.
    #[error("cosignature is {actual} bytes, expected 72")]
    WrongLength {
        /// Bytes after the key ID.
        actual: usize,
    },
    /// The Ed25519 signature does not verify.
    #[error("cosignature by {name} does not verify")]
    BadSignature {
        /// The cosigner name.
        name: String,
    },
}

/// Why two notes are not usable evidence of equivocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EquivocationError {
    /// One of the notes does not verify under the trusted keys.
    #[error("{which} note: {source}")]
    Note {
        /// "first" or "second".
        which: &'static str,
        /// Why it failed.
        source: NoteError,
    },
    /// One of the notes is not a checkpoint.
    #[error("{which} note is not a checkpoint: {source}")]
    Checkpoint {
        /// "first" or "second".
        which: &'static str,
        /// Why it failed.
        source: CheckpointError,
    },
    /// The checkpoints name different logs.
    #[error("checkpoints are for different origins")]
    DifferentOrigins,
    /// The checkpoints agree: same size and root, or the proof verifies.
    #[error("checkpoints of sizes {first_size} and {second_size} are consistent")]
    Consistent {
        /// Size of the first checkpoint.
        first_size: u64,
        /// Size of the second checkpoint.
        second_size: u64,
    },
    /// Different sizes were given to the same-size constructor, or vice versa.
    #[error("checkpoint sizes {first_size} and {second_size} do not fit this kind of evidence")]
    SizeMismatch {
        /// Size of the first checkpoint.
        first_size: u64,
        /// Size of the second checkpoint.
        second_size: u64,
    },
}

/// Why an `add-checkpoint` request body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessBodyError {
    /// The body does not start with a newline-terminated `old <size>` line.
    #[error("body must start with an \"old <size>\" line")]
    MissingOldLine,
    /// The old size is not canonical decimal that fits in 64 bits.
    #[error("old size is not canonical decimal")]
    InvalidOldSize,
    /// A proof line is not base64 of 32 bytes.
    #[error("proof line {line} is not base64 of a 32-byte hash")]
    InvalidProofLine {
        /// 1-based index among the proof lines.
        line: usize,
    },
    /// More than 63 proof lines.
    #[error("more than {max} proof lines")]
    TooManyProofLines {
        /// [`MAX_PROOF_LINES`](crate::MAX_PROOF_LINES).
        max: usize,
    },
    /// No empty line ends the proof.
    #[error("no empty line before the checkpoint")]
    MissingSeparator,
    /// Nothing follows the empty line.
    #[error("no checkpoint after the empty line")]
    MissingCheckpoint,
}
