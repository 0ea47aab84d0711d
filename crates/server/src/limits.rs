//! Every bound the server puts on what a client can make it hold or do, in one place (the
//! README's "Resource bounds" table lists them). Each is answered with an error response or
//! a log line (and a message shown once), never a crash or a hang.

/// Bytes in one message body. A larger frame is answered with a parse error and skipped
/// without being buffered.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Bytes in one header line; the header block holds at most [`MAX_HEADER_LINES`] lines.
pub const MAX_HEADER_LINE: usize = 8 << 10;
pub const MAX_HEADER_LINES: usize = 32;

/// Bytes (UTF-8) in one open document. A larger one is not kept: it gets no completions
/// until it shrinks (a full-text change) or is reopened.
pub const MAX_DOCUMENT_BYTES: usize = 32 << 20;
/// Open documents. Opening one more closes the one changed least recently.
pub const MAX_DOCUMENTS: usize = 1000;
/// Bytes of all open documents together; past it, the least recently changed are closed.
pub const MAX_TOTAL_DOCUMENT_BYTES: usize = 256 << 20;

/// Completion requests being handled at once (in their debounce, waiting for the model or
/// computing). One more is answered at once with `RequestFailed` (-32803). Other requests are
/// answered as soon as they are read, and are not counted.
pub const MAX_IN_FLIGHT: usize = 256;
/// Completion requests waiting for their turn on the model (the serving core's bound).
pub use copilot_service::turns::MAX_WAITING_FOR_MODEL;
/// Request ids the framework cannot carry (floats, integers past `i32`) remembered at once.
pub const MAX_REMAPPED_IDS: usize = 1024;
