//! One TLS port for the web and TURN: after the handshake a connection goes to the web server or to the TURN
//! server by its ALPN and, when it negotiated none (TURN clients offer none), by its first bytes. STUN starts
//! with two zero bits and carries the magic cookie at bytes 4..8; HTTP starts with a method name in upper-case
//! ASCII. The bytes read to decide are put back in front of the stream, so neither side loses any.
//!
//! The decision is [`classify`], a pure function of the ALPN and the bytes so far; [`SharedPort`] is the thin
//! axum-server acceptor around it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::parts::TurnPart;

/// RFC 7443's ALPN names for TURN and STUN over TLS. The HTTPS port prefers them to HTTP's: a client that offers
/// one is a STUN/TURN client (coturn's offers `http/1.1`, `stun.turn` and `stun.nat-discovery`, in that order;
/// browsers offer neither), and one that offers only them is not refused in the handshake.
pub const STUN_ALPN: &[u8] = b"stun.turn";
/// See [`STUN_ALPN`].
pub const STUN_DISCOVERY_ALPN: &[u8] = b"stun.nat-discovery";

/// Bytes [`classify`] needs at most: a STUN header up to and including the magic cookie.
pub const PEEK_MAX: usize = 8;

/// Where a connection on the shared port goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// HTTP/1.1 or HTTP/2: the web client, signaling, health and metrics.
    Web,
    /// STUN: the TURN server, as a connection on its TURNS port would be.
    Turn,
    /// Not enough bytes yet to tell.
    NeedMore,
    /// Neither: the connection is closed.
    Garbage,
}

/// Decides from the negotiated ALPN and the first decrypted bytes (at most [`PEEK_MAX`] are looked at).
pub fn classify(alpn: Option<&[u8]>, first: &[u8]) -> Route {
    match alpn {
        Some(b"h2" | b"http/1.1") => return Route::Web,
        Some(STUN_ALPN | STUN_DISCOVERY_ALPN) => return Route::Turn,
        // rustls negotiates only what the server offers; anything else cannot be served here.
        Some(_) => return Route::Garbage,
        None => {}
    }
    let Some(&b0) = first.first() else {
        return Route::NeedMore;
    };
    if b0 & 0xC0 == 0 {
        // STUN (RFC 8489 §5): two zero bits, then the cookie at 4..8. ChannelData (0b01) cannot come first.
        return match first.get(4..8) {
            None => Route::NeedMore,
            Some(cookie) if cookie == peercall_stun::MAGIC_COOKIE.to_be_bytes() => Route::Turn,
            Some(_) => Route::Garbage,
        };
    }
    // An HTTP/1.x method (GET, POST, ...) or the HTTP/2 preface (PRI * HTTP/2.0) of a client without ALPN.
    if b0.is_ascii_uppercase() {
        Route::Web
    } else {
        Route::Garbage
    }
}

/// A stream with bytes already read from it put back in front.
pub struct Replay<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Replay<S> {
        Replay {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.at..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A TLS stream that tells what ALPN protocol its handshake negotiated.
pub trait Negotiated {
    fn alpn(&self) -> Option<&[u8]>;
}

impl<IO> Negotiated for tokio_rustls::server::TlsStream<IO> {
    fn alpn(&self) -> Option<&[u8]> {
        self.get_ref().1.alpn_protocol()
    }
}

/// The acceptor of the HTTPS port: the TLS acceptor `tls` (any that yields a [`Negotiated`] stream), then
/// [`classify`]; TURN connections are handed to `turn`, and the web server sees only the rest.
#[derive(Clone)]
pub struct SharedPort<A> {
    tls: A,
    turn: Option<TurnPart>,
    /// From accept to the decision, handshake included: the TURN first-message deadline (--tcp-first-message-
    /// timeout), so a connection that sends nothing after its handshake holds nothing longer than on 5349.
    decide_within: Duration,
}

impl<A> SharedPort<A> {
    pub fn new(tls: A, turn: Option<TurnPart>, decide_within: Duration) -> SharedPort<A> {
        SharedPort {
            tls,
            turn,
            decide_within,
        }
    }
}

/// Why an accepted connection did not reach the web server (axum-server drops it without a word).
fn not_for_web(kind: io::ErrorKind, what: &'static str) -> io::Error {
    io::Error::new(kind, what)
}

impl<A, S> Accept<TcpStream, S> for SharedPort<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: AsyncRead + AsyncWrite + Negotiated + Unpin + Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Replay<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let accepted = Instant::now();
        let addrs = stream
            .peer_addr()
            .and_then(|c| Ok((c, stream.local_addr()?)));
        let _ = stream.set_nodelay(true);
        let handshake = self.tls.accept(stream, service);
        let turn = self.turn.clone();
        let deadline = accepted + self.decide_within;
        Box::pin(async move {
            let (mut tls, service) = handshake.await?;
            let mut first = Vec::with_capacity(PEEK_MAX);
            loop {
                match classify(tls.alpn(), &first) {
                    Route::Web => return Ok((Replay::new(first, tls), service)),
                    Route::Turn => {
                        let (Some(turn), Ok((client, server))) = (turn, addrs) else {
                            return Err(not_for_web(
                                io::ErrorKind::InvalidData,
                                "STUN on the HTTPS port without a TURN server",
                            ));
                        };
                        turn.adopt_tls_stream(Replay::new(first, tls), client, server, accepted);
                        return Err(not_for_web(
                            io::ErrorKind::Other,
                            "handed to the TURN server",
                        ));
                    }
                    Route::Garbage => {
                        return Err(not_for_web(
                            io::ErrorKind::InvalidData,
                            "neither HTTP nor STUN on the HTTPS port",
                        ));
                    }
                    Route::NeedMore => {}
                }
                // At most PEEK_MAX bytes in all, within the deadline: a silent connection is closed.
                let mut chunk = [0u8; PEEK_MAX];
                let want = PEEK_MAX.saturating_sub(first.len()).max(1);
                let n = tokio::time::timeout_at(deadline, tls.read(&mut chunk[..want]))
                    .await
                    .map_err(|_| {
                        not_for_web(io::ErrorKind::TimedOut, "nothing sent after the handshake")
                    })??;
                if n == 0 {
                    return Err(not_for_web(
                        io::ErrorKind::UnexpectedEof,
                        "closed before sending anything",
                    ));
                }
                first.extend_from_slice(&chunk[..n]);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_binding() -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x00];
        m.extend_from_slice(&peercall_stun::MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7u8; 12]);
        m
    }

    #[test]
    fn alpn_decides_when_there_is_one() {
        assert_eq!(classify(Some(b"http/1.1"), b""), Route::Web);
        assert_eq!(classify(Some(b"h2"), b""), Route::Web);
        assert_eq!(classify(Some(STUN_ALPN), b""), Route::Turn);
        assert_eq!(classify(Some(STUN_DISCOVERY_ALPN), b""), Route::Turn);
        assert_eq!(classify(Some(b"acme-tls/1"), b"GET /"), Route::Garbage);
        // The ALPN wins over the bytes: an HTTP client's body is never taken for STUN.
        assert_eq!(classify(Some(b"http/1.1"), &stun_binding()), Route::Web);
    }

    #[test]
    fn without_alpn_the_first_bytes_decide() {
        let stun = stun_binding();
        assert_eq!(classify(None, &stun), Route::Turn);
        assert_eq!(classify(None, &stun[..8]), Route::Turn);
        for short in 0..8 {
            assert_eq!(
                classify(None, &stun[..short]),
                Route::NeedMore,
                "{short} bytes"
            );
        }
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x",
            b"PRI * HTTP/2.0\r\n",
            b"G",
        ] {
            assert_eq!(classify(None, http), Route::Web, "{http:?}");
        }
    }

    #[test]
    fn garbage_is_neither() {
        // Two zero bits but no cookie; ChannelData first; a TLS record inside TLS; lower case; binary noise.
        let mut no_cookie = stun_binding();
        no_cookie[4] ^= 0xff;
        for junk in [
            &no_cookie[..],
            &[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4][..],
            &[0x16, 0x03, 0x01, 0x00, 0x10, 0, 0, 0][..],
            b"get / http/1.1",
            &[0xff; 8][..],
            b"\r\n\r\n\r\n\r\n",
        ] {
            assert_eq!(classify(None, junk), Route::Garbage, "{junk:?}");
        }
    }

    #[tokio::test]
    async fn replay_gives_back_the_peeked_bytes_first() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" rest")
            .await
            .unwrap();
        drop(a);
        let mut r = Replay::new(b"GET".to_vec(), b);
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET rest");
    }
}
