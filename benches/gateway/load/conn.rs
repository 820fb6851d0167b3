//! One keep-alive HTTP/1.1 connection to the gateway, spoken by hand: the request written from
//! one reused buffer in a single `write`, the answer read into another and parsed with
//! `httparse`. Shared by the single-event load ([`super::http`]) and the batch load
//! ([`super::batch`]).

use std::io::Write as _;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection to the gateway.
///
/// The generator shares the machine's cores with everything it measures, so every microsecond
/// it spends per request is one the gateway cannot: requests are written from one reused
/// buffer in a single `write`, and answers are read into another and parsed with `httparse`
/// (only the status and the headers the bench classifies by are looked at).
pub(crate) struct Conn {
    stream: TcpStream,
    /// The request being sent: head and body.
    out: Vec<u8>,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
    /// Where the body of the last answer lies in `input`.
    body: std::ops::Range<usize>,
}

/// What the bench needs of an answer.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) replayed: bool,
    pub(crate) retry_after: bool,
    /// The server said `Connection: close`.
    pub(crate) close: bool,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            out: Vec::with_capacity(4096),
            input: Vec::with_capacity(4096),
            body: 0..0,
        })
    }

    /// Posts the JSON `body` to `path`, with an `Idempotency-Key` header if `key` is given;
    /// reads the whole answer (its body is then [`Conn::answer_body`]).
    pub(crate) async fn post(
        &mut self,
        host: &str,
        path: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Answer> {
        self.out.clear();
        write!(self.out, "POST {path} HTTP/1.1\r\nhost: {host}\r\n")?;
        if let Some(key) = key {
            write!(self.out, "idempotency-key: {key}\r\n")?;
        }
        write!(
            self.out,
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        self.read_answer().await
    }

    /// The body of the last answer read.
    pub(crate) fn answer_body(&self) -> &[u8] {
        &self.input[self.body.clone()]
    }

    async fn read_answer(&mut self) -> std::io::Result<Answer> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        self.input.clear();
        loop {
            let (answer, head_len, body_len) = {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&self.input) {
                    Ok(httparse::Status::Complete(head_len)) => {
                        let mut answer = Answer {
                            status: response.code.unwrap_or_default(),
                            replayed: false,
                            retry_after: false,
                            close: false,
                        };
                        let mut body_len = 0usize;
                        for header in response.headers.iter() {
                            let name = header.name;
                            if name.eq_ignore_ascii_case("content-length") {
                                body_len = std::str::from_utf8(header.value)
                                    .ok()
                                    .and_then(|v| v.trim().parse().ok())
                                    .ok_or_else(|| invalid("bad content-length"))?;
                            } else if name.eq_ignore_ascii_case("idempotent-replayed") {
                                answer.replayed = header.value == b"true";
                            } else if name.eq_ignore_ascii_case("retry-after") {
                                answer.retry_after = true;
                            } else if name.eq_ignore_ascii_case("connection") {
                                answer.close = header.value.eq_ignore_ascii_case(b"close");
                            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                                // The bench reads answers by their length only.
                                return Err(invalid("chunked answer"));
                            }
                        }
                        (answer, head_len, body_len)
                    }
                    Ok(httparse::Status::Partial) => {
                        self.fill().await?;
                        continue;
                    }
                    Err(_) => return Err(invalid("malformed response head")),
                }
            };
            while self.input.len() < head_len + body_len {
                self.fill().await?;
            }
            self.body = head_len..head_len + body_len;
            return Ok(answer);
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        self.input.reserve(4096);
        if self.stream.read_buf(&mut self.input).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}
