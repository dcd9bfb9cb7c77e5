//! One XML stream over any byte transport (TCP, TLS; later WebSocket framing):
//! framing, limits, stream headers and stream errors (RFC 6120 §4).
//!
//! [`XmlStream`] owns the transport and the parser. The c2s negotiation and the
//! session loop both drive it, so every transport gets the same limits and the
//! same errors.

mod bind2;
pub mod c2s;
pub mod framed;
pub(crate) mod idle_ping;
mod sasl2;
mod session_loop;

#[cfg(feature = "fuzzing")]
pub(crate) use {
    bind2::resource as bind2_resource,
    sasl2::{initial_response, token_request, user_agent},
};

use std::collections::VecDeque;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::{ByteBudget, Charge};

use crate::xml::{escape, ns, Frame, ParseError, ParserLimits, StreamParser};

/// Bytes read from the transport at a time.
const READ_CHUNK: usize = 4096;

/// Bytes one [`XmlStream::read_some`] takes in before it hands over what it
/// parsed: a peer pipelining large stanzas has a few hundred KiB of them
/// parsed ahead, not 64 (which would be 32 MiB at the s2s stanza limit, held
/// while a rate limit makes the stream wait).
const READ_BURST: usize = 256 * 1024;

/// Why a stream ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StreamFail {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by peer")]
    Eof,
}

/// A stream error to send (RFC 6120 §4.9.3).
#[derive(Debug, Clone)]
pub struct StreamError {
    pub condition: &'static str,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §4.9.4), serialised.
    pub app: Option<String>,
}

impl StreamError {
    pub fn new(condition: &'static str) -> Self {
        StreamError {
            condition,
            text: None,
            app: None,
        }
    }
    pub fn text(condition: &'static str, text: impl Into<String>) -> Self {
        StreamError {
            condition,
            text: Some(text.into()),
            app: None,
        }
    }
    /// Add an application-specific condition element.
    pub fn with_app(mut self, el: &minidom::Element) -> Self {
        let mut out = Vec::new();
        crate::xml::serialize(el, &mut out);
        self.app = String::from_utf8(out).ok();
        self
    }
}

/// Any byte transport a stream can run on.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves when a read would make progress, without holding a buffer: an
    /// idle session then costs no read buffer at all.
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl Transport for tokio::net::TcpStream {
    async fn readable(&self) -> std::io::Result<()> {
        tokio::net::TcpStream::readable(self).await
    }
}

impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    async fn readable(&self) -> std::io::Result<()> {
        // Plaintext never waits inside rustls between reads: a read that
        // filled the whole buffer is followed by another read (see
        // `XmlStream::read_some`), so readiness of the socket is enough.
        self.get_ref().0.readable().await
    }
}

/// An XML stream on transport `T`.
pub struct XmlStream<T> {
    pub(crate) io: T,
    parser: StreamParser,
    frames: VecDeque<Frame>,
    header_sent: bool,
    /// The last read filled the whole chunk but stopped early (enough frames
    /// parsed): TLS may hold decrypted bytes the socket no longer signals.
    more: bool,
    /// Until the peer authenticates: its share of the bytes all unauthenticated
    /// peers together may make the server buffer.
    charge: Option<Charge>,
}

impl<T: Transport> XmlStream<T> {
    pub fn new(io: T, limits: ParserLimits) -> Self {
        XmlStream {
            io,
            parser: StreamParser::new(limits),
            frames: VecDeque::new(),
            header_sent: false,
            more: false,
            charge: None,
        }
    }

    /// Count what this (unauthenticated) peer makes the server buffer against
    /// `budget`, until [`XmlStream::set_limits`] says it authenticated.
    pub fn charge_to(mut self, budget: &Arc<ByteBudget>) -> Self {
        self.charge = Some(budget.charge());
        self
    }

    /// Expect a new stream header from the peer (after TLS or SASL).
    pub fn restart(&mut self, limits: ParserLimits) {
        self.parser.reset();
        self.parser.set_limits(limits);
        self.frames.clear();
        self.header_sent = false;
    }

    /// Give back buffer capacity grown during negotiation or the last burst
    /// (the frame queue, the parser's element stack): a session calls it
    /// each time it has handled every frame and is about to wait, so a quiet
    /// session holds its state and nothing else.
    pub fn release_buffers(&mut self) {
        self.frames.shrink_to_fit();
        self.parser.shrink();
    }

    /// Change the parser limits in place: called once the peer authenticated,
    /// which also ends its charge against the unauthenticated budget.
    pub fn set_limits(&mut self, limits: ParserLimits) {
        self.parser.set_limits(limits);
        self.charge = None;
    }

    /// The next frame, reading as needed.
    pub async fn next(&mut self) -> Result<Frame, StreamFail> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Ok(f);
            }
            self.read_some().await?;
        }
    }

    /// Read from the transport and parse what arrived. Reads again while a
    /// read fills the whole buffer, up to [`READ_BURST`] bytes; stopping
    /// early sets `more`, so nothing stays buffered inside TLS unnoticed.
    pub async fn read_some(&mut self) -> Result<(), StreamFail> {
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut total = 0;
        loop {
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Err(StreamFail::Eof);
            }
            total += n;
            let mut out = Vec::new();
            let r = self.parser.feed(&chunk[..n], &mut out);
            self.frames.extend(out);
            r?;
            if let Some(c) = &mut self.charge {
                // What the peer left half-sent, plus the frames not yet taken.
                if !c.set(self.parser.pending_bytes() + n) {
                    return Err(StreamFail::Parse(ParseError::Busy));
                }
            }
            if n < chunk.len() || self.frames.len() > 64 || total >= READ_BURST {
                self.more = n == chunk.len();
                return Ok(());
            }
        }
    }

    /// Resolves when the transport has something to read (at once if a read
    /// stopped early, so a burst of stanzas never stalls inside TLS).
    pub async fn readable(&self) -> Result<(), StreamFail> {
        if self.more {
            return Ok(());
        }
        Ok(self.io.readable().await?)
    }

    /// Frames parsed but not yet taken.
    pub fn take_ready(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Send our stream header.
    pub async fn send_header(
        &mut self,
        domain: &str,
        id: &str,
        content_ns: &str,
    ) -> std::io::Result<()> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{content_ns}' xmlns:stream='{}' id='{id}' from='{}' version='1.0' xml:lang='en'>",
            ns::STREAM,
            escape(domain)
        );
        self.header_sent = true;
        self.write(header.as_bytes()).await
    }

    /// Serialise and send an element.
    pub async fn send(&mut self, el: &minidom::Element) -> std::io::Result<()> {
        let mut buf = Vec::new();
        crate::xml::serialize(el, &mut buf);
        self.write(&buf).await
    }

    /// Write raw bytes and flush.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Send a stream error and close the stream (header first if none was sent).
    pub async fn fail(&mut self, domain: &str, err: &StreamError) {
        let mut out = String::new();
        if !self.header_sent {
            out.push_str(&format!(
                "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0'>",
                ns::CLIENT,
                ns::STREAM,
                crate::core::random_hex(8),
                escape(domain)
            ));
        }
        out.push_str(&format!(
            "<stream:error><{} xmlns='{}'/>",
            err.condition,
            ns::STREAMS_ERR
        ));
        if let Some(t) = &err.text {
            out.push_str(&format!(
                "<text xmlns='{}' xml:lang='en'>{}</text>",
                ns::STREAMS_ERR,
                escape(t)
            ));
        }
        if let Some(app) = &err.app {
            out.push_str(app);
        }
        out.push_str("</stream:error></stream:stream>");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = self.write(out.as_bytes()).await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    /// Close the stream cleanly.
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = self.write(b"</stream:stream>").await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }
}

/// The stream error for a failed read.
pub fn error_for(fail: &StreamFail) -> Option<StreamError> {
    match fail {
        StreamFail::Parse(p) => Some(StreamError::text(p.condition(), p.to_string())),
        StreamFail::Io(_) | StreamFail::Eof => None,
    }
}
