//! The numbers of the NBD protocol (`doc/proto.md` in the NBD project), fixed newstyle only.
//! Everything on the wire is big-endian.

/// `NBDMAGIC`: the first eight bytes the server sends.
pub const INITIAL_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: follows the initial magic in newstyle negotiation, and starts every option.
pub const OPTION_MAGIC: u64 = 0x4948_4156_454F_5054;
/// Starts every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Starts every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Starts every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Starts every structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const CLIENT_FLAG_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_FLAG_NO_ZEROES: u32 = 1 << 1;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) | 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;

// Information types for `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub const TRANSMISSION_HAS_FLAGS: u16 = 1 << 0;
pub const TRANSMISSION_READ_ONLY: u16 = 1 << 1;
pub const TRANSMISSION_SEND_FLUSH: u16 = 1 << 2;
pub const TRANSMISSION_SEND_FUA: u16 = 1 << 3;
pub const TRANSMISSION_SEND_TRIM: u16 = 1 << 5;
pub const TRANSMISSION_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TRANSMISSION_CAN_MULTI_CONN: u16 = 1 << 8;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// WRITE_ZEROES: the zeros must be written, not punched as a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// BLOCK_STATUS: answer with one extent only.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

// Structured reply flags and chunk types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

/// The one meta context this server offers, and the ID it has on every connection.
pub const META_CONTEXT_BASE_ALLOCATION: &str = "base:allocation";
pub const BASE_ALLOCATION_ID: u32 = 1;
/// `base:allocation` extent flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

// Errors carried in replies (Linux errno values, as the protocol fixes them).
pub const ERROR_PERM: u32 = 1;
pub const ERROR_IO: u32 = 5;
pub const ERROR_INVALID: u32 = 22;
pub const ERROR_NO_SPACE: u32 = 28;
pub const ERROR_NOT_SUPPORTED: u32 = 95;

/// The largest name, option payload and request we accept. Clients learn the request limit from
/// `NBD_INFO_BLOCK_SIZE`; qemu and libnbd stay well below it.
pub const MAX_OPTION_LENGTH: u32 = 64 * 1024;
pub const MAX_REQUEST_LENGTH: u32 = 32 * 1024 * 1024;
/// Advertised as the preferred block size: reads and writes of this size avoid read-modify-write
/// in providers whose chunks are a multiple of it.
pub const PREFERRED_BLOCK_SIZE: u32 = 4096;
